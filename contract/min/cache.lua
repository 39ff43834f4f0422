









local op=ARGV[1]
if op=="get"then
return redis.call("GET",KEYS[1])
elseif op=="set"then
local ttl_ms=tonumber(ARGV[3])
if ttl_ms==nil or ttl_ms<1 then
return redis.error_reply("ERR tokenlimit cache: bad ttl")
end
redis.call("SET",KEYS[1],ARGV[2],"PX",ttl_ms)
return 1
end
return redis.error_reply("ERR tokenlimit cache: unknown operation")
