-- Give back a claimed half-open probe that proved nothing (its client left before an answer), so the
-- next caller may probe at once instead of waiting for the claim to expire.
-- KEYS: 1 state hash, 2 blocked zset
-- ARGV: 1 deployment id
-- Returns 1 when a claim was released, else 0.
local state = redis.call('HMGET', KEYS[1], 'open_until', 'probe_until')
if not state[1] or not state[2] then
  return 0
end
redis.call('HDEL', KEYS[1], 'probe_until')
redis.call('ZADD', KEYS[2], state[1], ARGV[1])
return 1
