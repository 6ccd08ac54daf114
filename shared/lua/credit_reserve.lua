-- Hold an amount of an account's available credit (balance - reserved) for one request, or refuse.
--
-- KEYS[1] the account's credit hash (balance, reserved, spent; integer micro-USD)
-- KEYS[2] the reservation's record, KEYS[3] the sorted set of open reservations by deadline
-- ARGV[1] amount (micro-USD), ARGV[2] time to live (ms), ARGV[3] reservation id, ARGV[4] account id
-- Returns {1, available after, deadline ms} when held, {0, available, 0} when the credit is short or
-- the reservation was released before it was made (its record is a tombstone: credit_settle.lua).

local amount = tonumber(ARGV[1])
local credit = redis.call('HMGET', KEYS[1], 'balance', 'reserved')
local available = (tonumber(credit[1]) or 0) - (tonumber(credit[2]) or 0)
if amount > available or redis.call('EXISTS', KEYS[2]) == 1 then
  return {0, available, 0}
end

local time = redis.call('TIME')
local deadline = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
redis.call('HSET', KEYS[2], 'account', ARGV[4], 'amount', ARGV[1], 'deadline', string.format('%d', deadline),
  'state', 'held')
redis.call('ZADD', KEYS[3], string.format('%d', deadline), ARGV[3])
return {1, available - amount, deadline}
