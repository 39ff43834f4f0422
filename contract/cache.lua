-- tokenlimit response cache (issue 15, docs/cache.md): one entry per key, its TTL kept by Redis.
-- A script rather than plain GET/SET because the tokenlimit bridge only runs contract/*.lua
-- scripts by SHA (controlplane/tokenlimit/bridge/guard.py): a bridge that forwarded any command
-- would let a filter's peer FLUSHALL. The filter builds the key (`tokenlimit:cache:{<hex>}`,
-- SHA-256 of the normalised request and the scope's identity, hash-tagged for Redis Cluster)
-- and the entry (filter/src/cache/entry.zig); the script never looks inside either.
--
--   KEYS[1]  the entry's key
--   ARGV[1]  "get": returns the entry, or false (nil) when there is none or it expired
--            "set": ARGV[2] the entry, ARGV[3] its TTL in milliseconds; returns 1
local op = ARGV[1]
if op == "get" then
  return redis.call("GET", KEYS[1])
elseif op == "set" then
  local ttl_ms = tonumber(ARGV[3])
  if ttl_ms == nil or ttl_ms < 1 then
    return redis.error_reply("ERR tokenlimit cache: bad ttl")
  end
  redis.call("SET", KEYS[1], ARGV[2], "PX", ttl_ms)
  return 1
end
return redis.error_reply("ERR tokenlimit cache: unknown operation")
