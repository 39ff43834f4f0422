-- tokenlimit: admit one request against all its counters, atomically.
-- The same budget math as filter/src/budget.zig (checked by filter/vectors/budget.json).
--
-- KEYS[i]  counter keys; all share one {rule} hash tag, so this runs on Redis Cluster too.
-- ARGV[1]  now in ms, or 0 to use the Redis server's clock (so skewed gateways agree)
-- ARGV[2]  1 = shadow mode: add the amounts even where a counter refuses
-- ARGV[3 + 4(i-1) ...]  per counter: algorithm (0 fixed, 1 sliding, 2 token_bucket),
--                        window length ms, limit, amount to add (0 = only check)
-- Returns {refused (1-based index, 0 = admitted), now_ms, then per counter: used, limit, reset_ms}
-- Records are hashes {s = start ms, u = used, p = previous window's usage}.

local function now_ms()
  if tonumber(ARGV[1]) > 0 then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function read(key)
  local v = redis.call('HMGET', key, 's', 'u', 'p')
  return {s = tonumber(v[1]) or 0, u = tonumber(v[2]) or 0, p = tonumber(v[3]) or 0}
end

-- The record brought forward to `now`: windows rolled, bucket refilled.
local function current(r, algorithm, length, limit, now)
  if algorithm == 2 then
    if r.u == 0 or now <= r.s then
      return {s = (r.u == 0) and now or r.s, u = r.u, p = 0}
    end
    local refilled = math.floor((now - r.s) * limit / length)
    if refilled >= r.u then return {s = now, u = 0, p = 0} end
    local spent = math.ceil(refilled * length / limit)
    return {s = r.s + spent, u = r.u - refilled, p = 0}
  end
  local start = now - (now % length)
  if r.s == start then return r end
  local previous = 0
  if algorithm == 1 and start >= length and r.s == start - length then previous = r.u end
  return {s = start, u = 0, p = previous}
end

-- {used, reset_ms} of a current record.
local function check(r, algorithm, length, limit, now)
  if algorithm == 0 then return r.u, r.s + length - now end
  if algorithm == 1 then
    local weighted = math.floor(r.p * (length - (now - r.s)) / length)
    return r.u + weighted, r.s + length - now
  end
  local excess = math.max(r.u - limit, 0) + 1
  local wait = math.ceil(excess * length / limit)
  return r.u, math.max(1, wait - math.max(now - r.s, 0))
end

local function fits(used, limit, amount)
  if used >= limit then return false end
  if amount > limit then return used == 0 end
  return used + amount <= limit
end

-- Keep a record as long as it can still matter: sliding windows look one window back, and an
-- overdrawn bucket needs longer than one window to refill.
local function ttl(r, algorithm, length, limit)
  if algorithm == 1 then return 2 * length end
  if algorithm == 2 then return math.max(length, math.ceil(r.u * length / limit)) end
  return length
end

local function write(key, r, algorithm, length, limit)
  redis.call('HSET', key, 's', r.s, 'u', r.u, 'p', r.p)
  redis.call('PEXPIRE', key, ttl(r, algorithm, length, limit))
end

local now = now_ms()
local force = tonumber(ARGV[2]) == 1
local states, results, refused = {}, {}, 0
for i, key in ipairs(KEYS) do
  local base = 3 + 4 * (i - 1)
  local algorithm, length = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local limit, amount = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local r = current(read(key), algorithm, length, limit, now)
  local used, reset = check(r, algorithm, length, limit, now)
  states[i] = {r = r, algorithm = algorithm, length = length, limit = limit, amount = math.min(amount, limit)}
  results[i] = {used, limit, reset}
  if refused == 0 and not fits(used, limit, amount) then refused = i end
end
if refused == 0 or force then
  for i, key in ipairs(KEYS) do
    local st = states[i]
    st.r.u = st.r.u + st.amount
    write(key, st.r, st.algorithm, st.length, st.limit)
    local used, reset = check(st.r, st.algorithm, st.length, st.limit, now)
    results[i] = {used, st.limit, reset}
  end
end
local reply = {refused, now}
for i = 1, #KEYS do
  reply[#reply + 1] = results[i][1]
  reply[#reply + 1] = results[i][2]
  reply[#reply + 1] = results[i][3]
end
return reply
