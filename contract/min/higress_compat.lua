































local op=ARGV[1]

if op=='check'then
local refused=0
local out={0,0}
for i=1,#KEYS do
local threshold=tonumber(ARGV[2*i])
local window=tonumber(ARGV[2*i+1])
local current=redis.call('GET',KEYS[i])
local ttl=redis.call('TTL',KEYS[i])
local count=0
if not current then
ttl=window
else
count=tonumber(current)or 0
if ttl<0 then ttl=window end
end
if refused==0 and count>threshold then refused=i end
out[#out+1]=count
out[#out+1]=threshold
out[#out+1]=ttl*1000
end
local t=redis.call('TIME')
out[1]=refused
out[2]=tonumber(t[1])*1000+math.floor(tonumber(t[2])/1000)
return out
elseif op=='charge'then
for i=1,#KEYS do
local threshold=tonumber(ARGV[3*i-1])
local window=tonumber(ARGV[3*i])
local added=tonumber(ARGV[3*i+1])
if added>0 then
local current=tonumber(redis.call('GET',KEYS[i])or'0')
if current<=threshold then
current=redis.call('INCRBY',KEYS[i],added)
if current==added then
redis.call('EXPIRE',KEYS[i],window)
else
local ttl=redis.call('TTL',KEYS[i])
if ttl<0 then redis.call('EXPIRE',KEYS[i],window)end
end
end
end
end
return#KEYS
end
return redis.error_reply('ERR higress_compat.lua: unknown operation')
