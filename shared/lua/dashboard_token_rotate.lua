-- Replace an account's dashboard token, atomically: the token its record names is deleted and the new
-- one written in the same step, so concurrent rotations leave exactly one token that signs in (a read of
-- the old digest followed by a separate transaction let each of them keep its own).
-- KEYS[1] the account's record, KEYS[2] the new token's key
-- ARGV[1] the new token's digest, ARGV[2] the account id, ARGV[3] the token keys' prefix (`<prefix><digest>`)
-- Returns 1, or 0 when the account does not exist (nothing written).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local old = redis.call('HGET', KEYS[1], 'dashboard_token_digest')
if old and old ~= '' then
  redis.call('DEL', ARGV[3] .. old)
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'dashboard_token_digest', ARGV[1])
return 1
