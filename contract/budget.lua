-- tokenlimit: every budget operation, one atomic script (EVALSHA, EVAL on NOSCRIPT).
-- The same budget math as filter/src/budget.zig, checked by the same vectors
-- (contract/budget.json) against both. One script, so the math exists once here.
--
-- KEYS[i]  counter keys; all share one {rule} hash tag, so this runs on Redis Cluster too.
-- KEYS[n + 1] (admit, settle, release; optional) the request's marker key, same hash tag: makes
--          each operation apply once per request (see "Idempotence" below).
-- ARGV[1]  'admit', 'settle', 'release', 'settle_batch', 'batch_admit', 'admit_many', 'peek',
--          'lease' or 'lease_return'
-- ARGV[2]  now in ms, or 0 to use the Redis server's clock (so skewed gateways agree)
--
-- admit:  ARGV[3] 1 = shadow mode: add the amounts even where a counter refuses;
--         ARGV[4 + 4(i-1) ...] per counter: algorithm (0 fixed, 1 sliding, 2 token_bucket),
--         window length ms, limit, amount to add (0 = only check).
--         Returns {refused (1-based index, 0 = admitted), now_ms, then per counter:
--         used, limit, reset_ms}.
-- settle: ARGV[3 + 5(i-1) ...] per counter: algorithm, window length ms, limit, reserved,
--         actual; ARGV[last] the admission time (ms, as admit returned it): a refund only
--         applies to the window the reservation was made in. Returns the counters changed.
-- release: as settle, for a request that gave up on its admission (its answer timed out or
--         was lost, or the client left): refunds what the admission reserved if it ran, or,
--         when it has not run yet, leaves a tombstone so that it reserves nothing when it does.
-- settle_batch: ARGV[3] the number of entries; then per entry 'settle' or 'release', its
--         counter count n, its admission time, its zone table ('' without calendar windows),
--         and 5 arguments per counter as settle. KEYS: per entry its n counter keys, then its
--         marker key. Every key of a call shares one hash tag (the filter groups by rule).
--         Returns each entry's settle result, in order.
-- batch_admit: ARGV[3] the number of settle_batch entries, the entries (as settle_batch),
--         then an admit's arguments from its force flag on; KEYS: the entries' keys, then the
--         admit's. Applies the settlements, then admits; replies as admit. A gateway worker
--         sends its queued settlements with its next admission this way: one call for both.
-- admit_many: (admission coalescing, issue 17) several requests' admissions of one rule in
--         one call, with queued settlements first. ARGV[3] the number of settle_batch entries,
--         the entries (as settle_batch), then the number of admissions, then per admission:
--         its counter count n, its force flag, (algorithm, window, limit, amount) per counter
--         as admit, its zone table ('' without calendar windows). KEYS: the entries' keys, then
--         per admission its n counter keys and its marker key. The settlements land, then each
--         admission runs in order exactly as its own admit would (marker included), seeing the
--         ones before it: a refusal of one changes nothing for the others beyond what
--         sequential admits give. Replies with each admission's admit reply, concatenated in
--         order (the filter knows each one's n). A call whose arguments do not add up is an
--         error and changes nothing.
-- peek:   ARGV[3 + 3(i-1) ...] per counter: algorithm, window length ms, limit. Writes nothing.
--         Returns {now_ms, then per counter: used, remaining, reset_ms}: what an admit of
--         nothing would report now (`tokenlimit usage` reads counters this way, so the
--         control plane has no copy of the math). remaining = max(limit - used, 0).
-- lease:  (leases for hot keys, issue 17; fixed windows of a fixed length only) a gateway
--         worker takes a slice of each counter's budget and admits against it locally.
--         ARGV[3 + 7(i-1) ...] per counter: algorithm (0), window length ms, limit, want (the
--         slice asked for), need (the triggering request's amount: the grant is at least
--         this, or nothing), carry (what the worker brings back: > 0 an unused remainder, given
--         back only while its window is the current one; < 0 a debt, settlements that cost
--         more than reserved, always charged), carry_end (the end, server ms, of the window the
--         carry belongs to). Carries are applied first; then, all or nothing as admit, each
--         counter is granted min(max(want, need), limit - used) where need fits. The grant is
--         counted as used at once, so the sum handed out never exceeds the limit. KEYS[n + 1]
--         the request's marker (required): set to 'l:<now>:<grant>,<grant>...'; a lease finding
--         its marker set is an error (it ran already). Returns an admit reply followed by the
--         grants: {refused, now_ms, (used, limit, reset_ms) per counter, grant per counter}.
-- lease_return: as lease, for a lease call whose answer never came: when the lease ran, its
--         grants are given back (in their window); when it has not, its carries are applied
--         and a tombstone left, so it does nothing if it runs later. Returns the counters
--         changed, or -1 when the marker says it was done already.
--
-- Calendar windows (a rule's time zone; weeks and months always): the window length is sent
-- as a negative code, -1 hour, -2 day, -3 week, -4 month, and the call ends with one more
-- argument, the zone's offsets around now: 'from_ms:offset_s,from_ms:offset_s,...' (found by
-- the count: one argument past the counters). The script is sent as calendar.lua followed by
-- this file (calendar_bounds comes from there); calls without calendar windows are unchanged.
--
-- Records are hashes {s = start ms, u = used, p = previous window's usage}.
--
-- Idempotence: the marker key holds what happened to the request: 'a:<ms>' (admitted at that
-- server time, reserved),
-- 'n' (admission refused, nothing reserved), 's' (settled or released), 'r' (released before
-- its admission ran). A settle or release finding 's' or 'r' changes nothing (a retried
-- settle never charges twice); an admit finding any marker reserves nothing (it landed after
-- its request gave up). Markers live as long as the longest window among the counters, at
-- least 10 minutes and at most an hour.

local function now_ms()
  if tonumber(ARGV[2]) > 0 then return tonumber(ARGV[2]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The zone table of this call (nil without calendar windows), set by the operation.
local zone_froms, zone_offsets = nil, nil
local calendar_codes = {[-1] = 'hour', [-2] = 'day', [-3] = 'week', [-4] = 'month'}
local nominal_ms = {[-1] = 3600000, [-2] = 86400000, [-3] = 604800000, [-4] = 2629746000}

local function read_zone(text)
  zone_froms, zone_offsets = {}, {}
  for from, offset in string.gmatch(text, '(%-?%d+):(%-?%d+)') do
    zone_froms[#zone_froms + 1] = tonumber(from)
    zone_offsets[#zone_offsets + 1] = tonumber(offset)
  end
  if #zone_froms == 0 then error('tokenlimit: empty zone table') end
end

-- The [start, end) window holding `at` for a window length or calendar code.
local function window_bounds(length, at)
  if length > 0 then
    local start = at - (at % length)
    return start, start + length
  end
  return calendar_bounds(at, calendar_codes[length], zone_froms, zone_offsets)
end

-- The nominal length of a window (the token bucket refills at limit per nominal length).
local function nominal(length)
  if length > 0 then return length end
  return nominal_ms[length]
end

local function read(key)
  local v = redis.call('HMGET', key, 's', 'u', 'p')
  return {s = tonumber(v[1]) or 0, u = tonumber(v[2]) or 0, p = tonumber(v[3]) or 0}
end

-- The record brought forward to `now`: windows rolled, bucket refilled.
local function current(r, algorithm, length, limit, now)
  if algorithm == 2 then
    length = nominal(length)
    if r.u == 0 or now <= r.s then
      return {s = (r.u == 0) and now or r.s, u = r.u, p = 0}
    end
    local refilled = math.floor((now - r.s) * limit / length)
    if refilled >= r.u then return {s = now, u = 0, p = 0} end
    local spent = math.ceil(refilled * length / limit)
    return {s = r.s + spent, u = r.u - refilled, p = 0}
  end
  local start = window_bounds(length, now)
  if r.s == start then return r end
  local previous = 0
  if algorithm == 1 then
    if length < 0 then
      if r.s == window_bounds(length, start - 1) then previous = r.u end
    elseif start >= length and r.s == start - length then
      previous = r.u
    end
  end
  return {s = start, u = 0, p = previous}
end

-- {used, reset_ms} of a current record.
local function check(r, algorithm, length, limit, now)
  if algorithm ~= 2 then
    local start, finish = window_bounds(length, now)
    local reset = finish - math.max(now, start)
    if algorithm == 0 then return r.u, reset end
    return r.u + math.floor(r.p * reset / (finish - start)), reset
  end
  length = nominal(length)
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
local function ttl(r, algorithm, length, limit, now)
  if length < 0 and algorithm ~= 2 then
    -- Until the window ends (fixed), and through the next one too (sliding weighs it).
    local _, finish = window_bounds(length, now)
    local until_end = math.max(finish - now, 1)
    if algorithm == 1 then return until_end + 32 * 86400000 end
    return until_end
  end
  length = nominal(length)
  if algorithm == 1 then return 2 * length end
  if algorithm == 2 then return math.max(length, math.ceil(r.u * length / limit)) end
  return length
end

-- Usage saturates at 2^53 (a Lua double's exact integers; the filter bounds one request's
-- charge far below it), so a reply never carries a number Redis cannot turn into an integer.
local used_max = 9007199254740992

local function write(key, r, algorithm, length, limit, now)
  r.u = math.min(r.u, used_max)
  redis.call('HSET', key, 's', r.s, 'u', r.u, 'p', r.p)
  redis.call('PEXPIRE', key, ttl(r, algorithm, length, limit, now))
end

local marker_ttl_min, marker_ttl_max = 600000, 3600000

-- How long a request's marker is kept: its longest window, within the bounds above.
local function marker_ttl(args, n, first, stride)
  local longest = 0
  for i = 1, n do longest = math.max(longest, nominal(tonumber(args[first + stride * (i - 1)]))) end
  return math.min(math.max(longest, marker_ttl_min), marker_ttl_max)
end

-- `keys` and `args` as KEYS and ARGV of an admit call (batch_admit passes its tail).
local function admit(now, keys, args)
  local force = tonumber(args[3]) == 1
  local n = math.floor((#args - 3) / 4)
  if (#args - 3) % 4 == 1 then read_zone(args[#args]) end
  local marker = keys[n + 1]
  local late = marker ~= nil and redis.call('EXISTS', marker) == 1
  local states, results, refused = {}, {}, 0
  for i = 1, n do
    local key = keys[i]
    local base = 4 + 4 * (i - 1)
    local algorithm, length = tonumber(args[base]), tonumber(args[base + 1])
    local limit, amount = tonumber(args[base + 2]), tonumber(args[base + 3])
    local r = current(read(key), algorithm, length, limit, now)
    local used, reset = check(r, algorithm, length, limit, now)
    states[i] = {r = r, algorithm = algorithm, length = length, limit = limit, amount = math.min(amount, limit)}
    results[i] = {used, limit, reset}
    if refused == 0 and not fits(used, limit, amount) then refused = i end
  end
  local applied = (refused == 0 or force) and not late
  if applied then
    for i = 1, n do
      local st = states[i]
      st.r.u = st.r.u + st.amount
      write(keys[i], st.r, st.algorithm, st.length, st.limit, now)
      local used, reset = check(st.r, st.algorithm, st.length, st.limit, now)
      results[i] = {used, st.limit, reset}
    end
  end
  if marker ~= nil and not late then
    redis.call('SET', marker, applied and ('a:' .. now) or 'n', 'PX', marker_ttl(args, n, 5, 4))
  end
  local reply = {refused, now}
  for i = 1, n do
    reply[#reply + 1] = results[i][1]
    reply[#reply + 1] = results[i][2]
    reply[#reply + 1] = results[i][3]
  end
  return reply
end

-- How long a request's marker is kept, from the window lengths of its counters.
local function marker_ttl_of(lengths)
  local longest = 0
  for _, length in ipairs(lengths) do longest = math.max(longest, nominal(length)) end
  return math.min(math.max(longest, marker_ttl_min), marker_ttl_max)
end

-- One settlement or release (`releasing`): replaces each reservation with the actual cost,
-- once. `keys` are its counter keys, `marker` its marker key (or nil), `args` its counters'
-- arguments from `first` on, 5 per counter. Returns the counters changed, or -1 when the
-- marker says it was done already.
local function settle_one(now, releasing, keys, marker, args, first, admitted_at)
  local n = #keys
  local lengths = {}
  for i = 1, n do lengths[i] = tonumber(args[first + 5 * (i - 1) + 1]) end
  if marker ~= nil then
    local state = redis.call('GET', marker)
    if state == 's' or state == 'r' then return -1 end
    if releasing and (state == false or state == 'n') then
      -- Nothing reserved (yet): an admission still on its way must reserve nothing.
      redis.call('SET', marker, 'r', 'PX', marker_ttl_of(lengths))
      return 0
    end
    -- The admission's own (server) time: a release never read the admit reply that says it.
    if state and string.sub(state, 1, 2) == 'a:' then admitted_at = tonumber(string.sub(state, 3)) end
  end
  local changed = 0
  for i = 1, n do
    local base = first + 5 * (i - 1)
    local algorithm, length = tonumber(args[base]), tonumber(args[base + 1])
    local limit, reserved, actual = tonumber(args[base + 2]), tonumber(args[base + 3]), tonumber(args[base + 4])
    if actual ~= reserved then
      local r = current(read(keys[i]), algorithm, length, limit, now)
      if actual > reserved then
        r.u = r.u + (actual - reserved)
      elseif algorithm == 2 or window_bounds(length, admitted_at) == r.s then
        r.u = math.max(r.u - (reserved - actual), 0)
      end
      write(keys[i], r, algorithm, length, limit, now)
      changed = changed + 1
    end
  end
  if marker ~= nil then redis.call('SET', marker, 's', 'PX', marker_ttl_of(lengths)) end
  return changed
end

-- settle, or release (`releasing`): one request's settlement, as settle_one.
local function settle(now, releasing)
  local n = math.floor((#ARGV - 3) / 5)
  local admitted_at = tonumber(ARGV[#ARGV])
  if (#ARGV - 3) % 5 == 1 then
    read_zone(ARGV[#ARGV])
    admitted_at = tonumber(ARGV[#ARGV - 1])
  end
  local keys = {}
  for i = 1, n do keys[i] = KEYS[i] end
  return settle_one(now, releasing, keys, KEYS[n + 1], ARGV, 3, admitted_at)
end

-- settle_batch: many requests' settlements and releases in one call (a gateway worker queues
-- them and flushes them together, issue 17). Each entry is applied exactly as its own
-- settle/release would be, markers included, so a batch retried after a lost reply changes
-- nothing twice. Returns each entry's result (as settle) in order.
-- Reads `count` settle_batch entries from ARGV[first] and KEYS[1] on, changing nothing.
-- Returns the entries, and where the arguments and keys after them start; nil and a message
-- when the entries do not add up.
local function parse_entries(count, first)
  local entries, at, key_at = {}, first, 1
  for j = 1, count do
    local n = tonumber(ARGV[at + 1]) or -1
    if n < 1 or at + 3 + 5 * n > #ARGV or key_at + n > #KEYS then break end
    entries[j] = {at = at, key_at = key_at, n = n}
    at, key_at = at + 4 + 5 * n, key_at + n + 1
  end
  if #entries ~= count then return nil, 'tokenlimit: settle_batch arguments do not add up' end
  return entries, at, key_at
end

-- Applies parsed entries in order; returns each entry's result.
local function apply_parsed(now, entries)
  local results = {}
  for j, entry in ipairs(entries) do
    local releasing, zone = ARGV[entry.at] == 'release', ARGV[entry.at + 3]
    if zone ~= '' then read_zone(zone) else zone_froms, zone_offsets = nil, nil end
    local keys = {}
    for i = 1, entry.n do keys[i] = KEYS[entry.key_at + i - 1] end
    results[j] = settle_one(now, releasing, keys, KEYS[entry.key_at + entry.n], ARGV, entry.at + 4, tonumber(ARGV[entry.at + 2]))
  end
  zone_froms, zone_offsets = nil, nil
  return results
end

-- Applies `count` settle_batch entries from ARGV[first] and KEYS[1] on. Returns each entry's
-- result, and where the arguments and keys after them start; nil and a message when the
-- entries do not add up (then nothing was changed).
local function apply_entries(now, count, first)
  local entries, at, key_at = parse_entries(count, first)
  if entries == nil then return nil, at end
  return apply_parsed(now, entries), at, key_at
end

local function settle_batch(now)
  local count = tonumber(ARGV[3]) or -1
  local results, at, key_at = apply_entries(now, count, 4)
  if results == nil then return redis.error_reply(at) end
  if at ~= #ARGV + 1 or key_at ~= #KEYS + 1 then
    return redis.error_reply('tokenlimit: settle_batch arguments do not add up')
  end
  return results
end

-- batch_admit: queued settlements first, then an admission, in one call (the admission sees
-- them). Replies as admit.
local function batch_admit(now)
  local results, at, key_at = apply_entries(now, tonumber(ARGV[3]) or -1, 4)
  if results == nil then return redis.error_reply(at) end
  local keys, args = {}, {'admit', ARGV[2]}
  for i = key_at, #KEYS do keys[#keys + 1] = KEYS[i] end
  for i = at, #ARGV do args[#args + 1] = ARGV[i] end
  return admit(now, keys, args)
end

-- admit_many: queued settlements, then several admissions of one rule in order (admission
-- coalescing, issue 17). Every argument is checked before anything is written.
local function admit_many(now)
  local entries, at, key_at = parse_entries(tonumber(ARGV[3]) or -1, 4)
  if entries == nil then return redis.error_reply(at) end
  local count = tonumber(ARGV[at]) or -1
  local admissions = {}
  at = at + 1
  for j = 1, count do
    local n = tonumber(ARGV[at]) or -1
    if n < 1 or at + 2 + 4 * n > #ARGV or key_at + n > #KEYS then break end
    admissions[j] = {at = at, key_at = key_at, n = n}
    at, key_at = at + 3 + 4 * n, key_at + n + 1
  end
  if count < 1 or #admissions ~= count or at ~= #ARGV + 1 or key_at ~= #KEYS + 1 then
    return redis.error_reply('tokenlimit: admit_many arguments do not add up')
  end
  apply_parsed(now, entries)
  local reply = {}
  for _, a in ipairs(admissions) do
    local keys, args = {}, {'admit', ARGV[2], ARGV[a.at + 1]}
    for i = 0, a.n do keys[#keys + 1] = KEYS[a.key_at + i] end
    for i = 1, 4 * a.n do args[#args + 1] = ARGV[a.at + 1 + i] end
    local zone = ARGV[a.at + 2 + 4 * a.n]
    zone_froms, zone_offsets = nil, nil
    if zone ~= '' then args[#args + 1] = zone end
    for _, value in ipairs(admit(now, keys, args)) do reply[#reply + 1] = value end
  end
  zone_froms, zone_offsets = nil, nil
  return reply
end

-- Read-only: brings each record forward to `now` in memory only (no HSET, no PEXPIRE).
local function peek(now)
  if (#ARGV - 2) % 3 == 1 then read_zone(ARGV[#ARGV]) end
  local reply = {now}
  for i, key in ipairs(KEYS) do
    local base = 3 + 3 * (i - 1)
    local algorithm, length, limit = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
    local r = current(read(key), algorithm, length, limit, now)
    local used, reset = check(r, algorithm, length, limit, now)
    reply[#reply + 1] = used
    reply[#reply + 1] = math.max(limit - used, 0)
    reply[#reply + 1] = reset
  end
  return reply
end

-- ---- leases (issue 17) ---------------------------------------------------------------------

local lease_stride = 7

-- The counters of a lease or lease_return call: {key, algorithm, length, limit, want, need,
-- carry, carry_end} each, or nil and a message when the arguments do not add up.
local function lease_counters()
  local n = (#ARGV - 2) / lease_stride
  if n < 1 or n ~= math.floor(n) or #KEYS ~= n + 1 then
    return nil, 'tokenlimit: lease arguments do not add up'
  end
  local counters = {}
  for i = 1, n do
    local base = 3 + lease_stride * (i - 1)
    local c = {key = KEYS[i]}
    c.algorithm, c.length, c.limit = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
    c.want, c.need = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
    c.carry, c.carry_end = tonumber(ARGV[base + 5]), tonumber(ARGV[base + 6])
    if c.algorithm ~= 0 or c.length <= 0 then
      return nil, 'tokenlimit: leases take fixed windows of a fixed length only'
    end
    counters[i] = c
  end
  return counters
end

-- Applies each counter's carry to its current record (c.r): a debt always, a remainder only
-- in the window it was granted in (a past window's record has reset anyway).
local function apply_carries(counters, now)
  for _, c in ipairs(counters) do
    c.r = current(read(c.key), c.algorithm, c.length, c.limit, now)
    local _, finish = window_bounds(c.length, now)
    if c.carry < 0 then
      c.r.u = c.r.u - c.carry
    elseif c.carry > 0 and c.carry_end == finish then
      c.r.u = math.max(c.r.u - c.carry, 0)
    end
  end
end

local function lease_marker_ttl(counters)
  local lengths = {}
  for i, c in ipairs(counters) do lengths[i] = c.length end
  return marker_ttl_of(lengths)
end

local function lease(now)
  local counters, problem = lease_counters()
  if counters == nil then return redis.error_reply(problem) end
  local marker = KEYS[#KEYS]
  if redis.call('EXISTS', marker) == 1 then
    return redis.error_reply('tokenlimit: lease already applied (its marker is set)')
  end
  apply_carries(counters, now)
  local refused = 0
  for i, c in ipairs(counters) do
    if refused == 0 and not fits(c.r.u, c.limit, c.need) then refused = i end
  end
  local grants = {}
  for i, c in ipairs(counters) do
    grants[i] = 0
    if refused == 0 then
      grants[i] = math.min(math.max(c.want, c.need), c.limit - c.r.u)
      c.r.u = c.r.u + grants[i]
    end
    write(c.key, c.r, c.algorithm, c.length, c.limit, now)
  end
  redis.call('SET', marker, 'l:' .. now .. ':' .. table.concat(grants, ','), 'PX', lease_marker_ttl(counters))
  local reply = {refused, now}
  for _, c in ipairs(counters) do
    local used, reset = check(c.r, c.algorithm, c.length, c.limit, now)
    reply[#reply + 1] = used
    reply[#reply + 1] = c.limit
    reply[#reply + 1] = reset
  end
  for i = 1, #counters do reply[#reply + 1] = grants[i] end
  return reply
end

local function lease_return(now)
  local counters, problem = lease_counters()
  if counters == nil then return redis.error_reply(problem) end
  local marker = KEYS[#KEYS]
  local state = redis.call('GET', marker)
  if state == false then
    -- The lease has not run: its carries land now, and it must grant nothing when it does.
    apply_carries(counters, now)
    for _, c in ipairs(counters) do write(c.key, c.r, c.algorithm, c.length, c.limit, now) end
    redis.call('SET', marker, 'r', 'PX', lease_marker_ttl(counters))
    return #counters
  end
  if string.sub(state, 1, 2) ~= 'l:' then return -1 end
  -- The lease ran (its carries landed with it): its grants go back, in their window.
  local at, list = string.match(state, '^l:(%d+):(.*)$')
  at = tonumber(at)
  local i, changed = 1, 0
  for grant in string.gmatch(list, '(%d+)') do
    local c = counters[i]
    if c == nil then break end
    local r = current(read(c.key), c.algorithm, c.length, c.limit, now)
    if tonumber(grant) > 0 and window_bounds(c.length, at) == r.s then
      r.u = math.max(r.u - tonumber(grant), 0)
      write(c.key, r, c.algorithm, c.length, c.limit, now)
      changed = changed + 1
    end
    i = i + 1
  end
  redis.call('SET', marker, 's', 'PX', lease_marker_ttl(counters))
  return changed
end

if ARGV[1] == 'admit' then return admit(now_ms(), KEYS, ARGV) end
if ARGV[1] == 'settle' then return settle(now_ms(), false) end
if ARGV[1] == 'release' then return settle(now_ms(), true) end
if ARGV[1] == 'peek' then return peek(now_ms()) end
if ARGV[1] == 'settle_batch' then return settle_batch(now_ms()) end
if ARGV[1] == 'batch_admit' then return batch_admit(now_ms()) end
if ARGV[1] == 'admit_many' then return admit_many(now_ms()) end
if ARGV[1] == 'lease' then return lease(now_ms()) end
if ARGV[1] == 'lease_return' then return lease_return(now_ms()) end
return redis.error_reply('tokenlimit: unknown operation ' .. tostring(ARGV[1]))
