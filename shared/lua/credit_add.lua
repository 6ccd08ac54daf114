-- Add credit to an existing account and append the grant to its ledger, atomically.
--
-- KEYS[1] the account hash, KEYS[2] the account's credit hash, KEYS[3] the account's ledger stream
-- ARGV[1] amount (micro-USD, > 0), ARGV[2] reason, ARGV[3] actor, ARGV[4] the most a balance may hold
-- (micro-USD, below 2^53 so that Lua's numbers hold it exactly), ARGV[5] ledger entries kept (about)
-- Returns {1, balance after, ledger entry id}, {0, 0, ''} when the account does not exist, or
-- {-1, balance, ''} when the grant would take the balance past ARGV[4] (nothing written).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, ''}
end
local current = tonumber(redis.call('HGET', KEYS[2], 'balance') or '0')
if current + tonumber(ARGV[1]) > tonumber(ARGV[4]) then
  return {-1, current, ''}
end
local balance = redis.call('HINCRBY', KEYS[2], 'balance', ARGV[1])
local entry = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'amount', ARGV[1],
  'balance', string.format('%d', balance), 'reason', ARGV[2], 'actor', ARGV[3])
return {1, balance, entry}
