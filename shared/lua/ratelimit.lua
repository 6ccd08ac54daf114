-- Admit one request of an account under its plan's limit: GCRA on Redis server time, one round trip.
--
-- KEYS[1] the account hash (its `plan` picks the limit; `status` = suspended refuses everything)
-- KEYS[2] the limit's theoretical arrival time (TAT), integer microseconds of Redis TIME
-- KEYS[3] optional: the API key hash, whose `last_used` is set when the request is admitted
-- ARGV[1] cost of this request (1 for a request limit)
-- ARGV[2] period in microseconds (a limit of N per period)
-- ARGV[3], ARGV[4] fallback plan name and limit (the key's plan, used when the account names none we know)
-- ARGV[5..] pairs of plan name, limit per period
--
-- Returns {admitted (1, 0, or -1 when suspended), limit, remaining, reset_us, retry_after_us, plan}:
-- reset_us is the time until the limit is fully restored, retry_after_us until this cost would fit.

local account = redis.call('HMGET', KEYS[1], 'status', 'plan')
local plan, limit = ARGV[3], tonumber(ARGV[4])
if account[2] then
  for i = 5, #ARGV, 2 do
    if ARGV[i] == account[2] then
      plan, limit = ARGV[i], tonumber(ARGV[i + 1])
      break
    end
  end
end
if account[1] == 'suspended' then
  return {-1, limit, 0, 0, 0, plan}
end

local cost = tonumber(ARGV[1])
local interval = math.floor(tonumber(ARGV[2]) / limit)
local capacity = interval * limit
if cost > limit then cost = limit end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - capacity

if now < allow_at then
  local remaining = math.floor((capacity - (tat - now)) / interval)
  return {0, limit, remaining, tat - now, allow_at - now, plan}
end

local reset = new_tat - now
redis.call('SET', KEYS[2], string.format('%d', new_tat), 'PX', math.ceil(reset / 1000))
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'last_used', string.format('%d.%06d', time[1], time[2]))
end
return {1, limit, math.floor((capacity - reset) / interval), reset, 0, plan}
