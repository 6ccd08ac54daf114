-- Settle a reservation to the request's actual cost and release the rest of its hold (cost 0 = release).
-- A charge never exceeds what was held, so concurrent requests can never spend past the balance; a
-- reservation the sweep already expired is charged from what is still available, never below zero.
--
-- KEYS[1] the account's credit hash, KEYS[2] the reservation's record, KEYS[3] the open reservations
-- ARGV[1] actual cost (micro-USD), ARGV[2] reservation id, ARGV[3] seconds to keep the settled record
-- Returns {outcome, charged}: outcome is settled, late (it had expired), already (settled before) or
-- unknown (no such reservation).

local record = redis.call('HMGET', KEYS[2], 'state', 'amount')
if not record[1] then
  return {'unknown', 0}
end
if record[1] == 'settled' then
  return {'already', 0}
end

local actual = tonumber(ARGV[1])
local charge, outcome
if record[1] == 'held' then
  local amount = tonumber(record[2])
  charge = math.min(actual, amount)
  redis.call('HINCRBY', KEYS[1], 'reserved', string.format('%d', -amount))
  redis.call('ZREM', KEYS[3], ARGV[2])
  outcome = 'settled'
else
  local credit = redis.call('HMGET', KEYS[1], 'balance', 'reserved')
  local available = (tonumber(credit[1]) or 0) - (tonumber(credit[2]) or 0)
  charge = math.max(0, math.min(actual, available))
  outcome = 'late'
end

if charge > 0 then
  redis.call('HINCRBY', KEYS[1], 'balance', string.format('%d', -charge))
  redis.call('HINCRBY', KEYS[1], 'spent', string.format('%d', charge))
end
redis.call('HSET', KEYS[2], 'state', 'settled', 'charged', string.format('%d', charge))
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {outcome, charge}
