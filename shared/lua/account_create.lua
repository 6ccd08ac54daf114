-- Create an account unless its id is taken, with its list entry and dashboard token, all at once.
--
-- KEYS[1] the account hash, KEYS[2] the accounts index (sorted set), KEYS[3] the dashboard token key
-- ARGV[1] id, ARGV[2] name, ARGV[3] plan, ARGV[4] dashboard token digest, ARGV[5] created_at (unix s)
-- Returns 1 when created, 0 when the id is taken.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2], 'plan', ARGV[3], 'status', 'active',
  'dashboard_token_digest', ARGV[4], 'created_at', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1])
return 1
