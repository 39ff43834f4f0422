-- tokenlimit: replace each counter's reservation with the request's real cost.
-- The same budget math as filter/src/budget.zig and admit.lua.
--
-- KEYS[i]  counter keys (one {rule} hash tag)
-- ARGV[1]  now in ms, or 0 to use the Redis server's clock
-- ARGV[2 + 5(i-1) ...]  per counter: algorithm, window length ms, limit, reserved, actual
-- ARGV[last] the admission time (ms, as admit.lua returned it): a refund only applies to the
--            window the reservation was made in.
-- Returns the number of counters changed.

local function now_ms()
  if tonumber(ARGV[1]) > 0 then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

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

local now = now_ms()
local admitted_at = tonumber(ARGV[#ARGV])
local changed = 0
for i, key in ipairs(KEYS) do
  local base = 2 + 5 * (i - 1)
  local algorithm, length = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local limit, reserved, actual = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  if actual ~= reserved then
    local v = redis.call('HMGET', key, 's', 'u', 'p')
    local r = current({s = tonumber(v[1]) or 0, u = tonumber(v[2]) or 0, p = tonumber(v[3]) or 0},
      algorithm, length, limit, now)
    if actual > reserved then
      r.u = r.u + (actual - reserved)
    elseif algorithm == 2 or (admitted_at - (admitted_at % length)) == r.s then
      r.u = math.max(r.u - (reserved - actual), 0)
    end
    redis.call('HSET', key, 's', r.s, 'u', r.u, 'p', r.p)
    local ttl = length
    if algorithm == 1 then ttl = 2 * length end
    if algorithm == 2 then ttl = math.max(length, math.ceil(r.u * length / limit)) end
    redis.call('PEXPIRE', key, ttl)
    changed = changed + 1
  end
end
return changed
