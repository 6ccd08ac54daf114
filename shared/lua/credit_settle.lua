-- Settle a reservation to the request's actual cost and release the rest of its hold (cost 0 = release).
-- A cost above the hold (the prompt estimate fell short: images, say) is charged beyond it from what is
-- still available, and a reservation the sweep already expired from what is available: never from another
-- request's hold nor below zero, so concurrent requests can never spend past the balance.
--
-- An answer is charged only if someone can receive it: with ARGV[4], the reply channel its final frame is
-- published on (later in the same transaction), a channel nobody subscribes to (its ingress died, or lost
-- Redis and failed the request) releases the hold instead: the client never got the answer.
--
-- KEYS[1] the account's credit hash, KEYS[2] the reservation's record, KEYS[3] the open reservations
-- ARGV[1] actual cost (micro-USD), ARGV[2] reservation id, ARGV[3] seconds to keep the settled record,
-- ARGV[4] optional: the reply channel that must have a subscriber for a charge
-- Returns {outcome, charged}: outcome is settled, late (it had expired), already (settled before) or
-- unknown (no such reservation).

local record = redis.call('HMGET', KEYS[2], 'state', 'amount')
if not record[1] then
  if tonumber(ARGV[1]) == 0 then
    -- A release of a hold not made (yet): the ingress gave up on a round trip whose fate it does not
    -- know (Redis froze).  Its tombstone makes the hold, should that round trip still run, refused
    -- (credit_reserve.lua), so a request already answered 503 is neither queued nor charged.
    redis.call('HSET', KEYS[2], 'state', 'settled', 'charged', '0')
    redis.call('EXPIRE', KEYS[2], ARGV[3])
  end
  return {'unknown', 0}
end
if record[1] == 'settled' then
  return {'already', 0}
end

local actual = tonumber(ARGV[1])
if ARGV[4] and actual > 0 and redis.call('PUBSUB', 'NUMSUB', ARGV[4])[2] == 0 then
  actual = 0
end
local credit = redis.call('HMGET', KEYS[1], 'balance', 'reserved')
local available = math.max(0, (tonumber(credit[1]) or 0) - (tonumber(credit[2]) or 0))  -- beside this hold
local charge, outcome
if record[1] == 'held' then
  local amount = tonumber(record[2])
  charge = math.min(actual, amount + available)
  redis.call('HINCRBY', KEYS[1], 'reserved', string.format('%d', -amount))
  redis.call('ZREM', KEYS[3], ARGV[2])
  outcome = 'settled'
else
  charge = math.min(actual, available)
  outcome = 'late'
end

if charge > 0 then
  redis.call('HINCRBY', KEYS[1], 'balance', string.format('%d', -charge))
  redis.call('HINCRBY', KEYS[1], 'spent', string.format('%d', charge))
end
redis.call('HSET', KEYS[2], 'state', 'settled', 'charged', string.format('%d', charge))
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {outcome, charge}
