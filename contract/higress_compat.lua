-- tokenlimit, `compat: higress` / `compat: higress-1.0`: Higress ai-token-ratelimit's own
-- counting on Higress's own Redis keys, so an old Higress plugin and tokenlimit enforce one
-- budget while a rolling upgrade swaps one for the other (docs/higress-compat.md).
--
-- Matches, read from their source (plugins/wasm-go/extensions/ai-token-ratelimit/main.go):
--   Higress 1.0.x (alibaba/higress, VERSION 1.0.0, commit 4e0d691):
--     RequestPhaseFixedWindowScript, ResponsePhaseFixedWindowScript (one key per call);
--   Higress 2.0.1 (higress-group/higress, VERSION 2.0.1, commit 8e4041c):
--     MultiKeyRequestPhaseScript, MultiKeyResponsePhaseScript (every matching rule's key).
-- Both do the same per key: what this script does to Redis is, key by key, what theirs do.
-- Only the reply differs: `check` answers in budget.lua's admit shape, so the filter reads it
-- with the same code (filter/src/store/script.zig readAdmitReply).
--
-- KEYS[i]  Higress's keys (filter/src/store/higress_compat.zig builds them):
--          2.0.1  higress-token-ratelimit:{<rule>}:global_threshold:<window s>
--                 higress-token-ratelimit:{<rule>}:<limit_by_*>:<window s>:<name>:<value>
--          1.0.x  the same without the braces around <rule>.
-- ARGV[1]  'check' or 'charge'
--
-- check:  ARGV[2 + 2(i-1) ...] per key: threshold, window (s). Read-only (GET, TTL), as
--         Higress's request phase. A key refuses when its count is MORE than its threshold
--         (Higress: `current > threshold`; tokenlimit's own budgets refuse at the limit).
--         Returns {refused (1-based index of the first refusing key, 0 = admitted), now_ms,
--         then per key: count, threshold, ttl in ms} (an absent key: 0 and the window; a key
--         without expiry: the window, as Higress repairs it).
-- charge: ARGV[2 + 3(i-1) ...] per key: threshold, window (s), tokens (input + output).
--         Per key, as Higress's response phase: only while the count is at most the threshold,
--         INCRBY the tokens; the first charge (the count equals the tokens) sets EXPIRE to the
--         window, so the window opens at the first charge; a key found without expiry gets one.
--         A charge of 0 tokens changes nothing (Higress makes no call without usage: its Go code
--         charges only when input + output > 0). Returns the number of keys.

local op = ARGV[1]

if op == 'check' then
  local refused = 0
  local out = {0, 0}
  for i = 1, #KEYS do
    local threshold = tonumber(ARGV[2 * i])
    local window = tonumber(ARGV[2 * i + 1])
    local current = redis.call('GET', KEYS[i])
    local ttl = redis.call('TTL', KEYS[i])
    local count = 0
    if not current then
      ttl = window
    else
      count = tonumber(current) or 0
      if ttl < 0 then ttl = window end
    end
    if refused == 0 and count > threshold then refused = i end
    out[#out + 1] = count
    out[#out + 1] = threshold
    out[#out + 1] = ttl * 1000
  end
  local t = redis.call('TIME')
  out[1] = refused
  out[2] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  return out
elseif op == 'charge' then
  for i = 1, #KEYS do
    local threshold = tonumber(ARGV[3 * i - 1])
    local window = tonumber(ARGV[3 * i])
    local added = tonumber(ARGV[3 * i + 1])
    if added > 0 then
      local current = tonumber(redis.call('GET', KEYS[i]) or '0')
      if current <= threshold then
        current = redis.call('INCRBY', KEYS[i], added)
        if current == added then
          redis.call('EXPIRE', KEYS[i], window)
        else
          local ttl = redis.call('TTL', KEYS[i])
          if ttl < 0 then redis.call('EXPIRE', KEYS[i], window) end
        end
      end
    end
  end
  return #KEYS
end
return redis.error_reply('ERR higress_compat.lua: unknown operation')
