-- Create an API key unless its account is over a cap, all at once: live keys, creations per window, and
-- (for a self-service caller) a suspended account.
--
-- KEYS[1] the new key's hash, KEYS[2] the key id -> digest index, KEYS[3] the account's set of key ids,
-- KEYS[4] the account's creation log (sorted set, ms), KEYS[5] the account's record, KEYS[6] the account's
-- set of unrevoked key ids (counted in O(1): revoked keys, kept for the account's list, cost nothing here)
-- ARGV[1] key id, ARGV[2] digest, ARGV[3] most live keys (0 = no cap), ARGV[4] most creations per
-- window (0 = no cap), ARGV[5] window (ms), ARGV[6] '1' to refuse a suspended account,
-- ARGV[7..] the record's field/value pairs
-- Returns {'ok'}, {'suspended'}, {'too_many_keys', live} or {'too_fast', ms until one more is allowed}.

if ARGV[6] == '1' and redis.call('HGET', KEYS[5], 'status') == 'suspended' then
  return {'suspended'}
end

local max_live = tonumber(ARGV[3])
if max_live > 0 then
  local live = redis.call('SCARD', KEYS[6])
  if live >= max_live then
    return {'too_many_keys', live}
  end
end

local per_window = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if per_window > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
  if redis.call('ZCARD', KEYS[4]) >= per_window then
    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    return {'too_fast', math.max(1, tonumber(oldest[2]) + window - now)}
  end
  redis.call('ZADD', KEYS[4], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[4], window)
end

local fields = {}
for i = 7, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
return {'ok'}
