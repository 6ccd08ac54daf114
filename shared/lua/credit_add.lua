-- Add credit to an existing account and append the grant to its ledger, atomically.
--
-- KEYS[1] the account hash, KEYS[2] the account's credit hash, KEYS[3] the account's ledger stream
-- ARGV[1] amount (micro-USD, > 0), ARGV[2] reason, ARGV[3] actor
-- Returns {1, balance after, ledger entry id}, or {0, 0, ''} when the account does not exist.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, ''}
end
local balance = redis.call('HINCRBY', KEYS[2], 'balance', ARGV[1])
local entry = redis.call('XADD', KEYS[3], '*', 'amount', ARGV[1], 'balance', string.format('%d', balance),
  'reason', ARGV[2], 'actor', ARGV[3])
return {1, balance, entry}
