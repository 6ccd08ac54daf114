-- Admit one request of an account under its plan's limits: GCRA on Redis server time, one round trip.
-- A plan limits requests per period and, optionally, tokens per period; a request is admitted only if
-- both limits have room, and then counted against both (a refused request counts against neither).
--
-- KEYS[1] the account hash (its `plan` picks the limits; `status` = suspended refuses everything)
-- KEYS[2], KEYS[3] the request and token limits' theoretical arrival times (integer µs of Redis TIME)
-- KEYS[4] optional: the API key hash, whose `last_used` is set when the request is admitted
-- ARGV[1] the request's estimated tokens (0: not counted against a token limit)
-- ARGV[2] period in microseconds (limits are per period)
-- ARGV[3] 1 to count the request; 0 to only read the limits (never refused but when suspended)
-- ARGV[4..6] fallback plan name, requests and tokens per period (used when the account names no plan
--            that is in the table)
-- ARGV[7..] triples of plan name, requests per period, tokens per period (0 = no token limit)
--
-- Returns {admitted (1, 0, or -1 when suspended), plan, refused_by ('' / 'requests' / 'tokens'),
--          retry_after_us, request limit, remaining, reset_us, token limit, remaining, reset_us};
-- reset_us is the time until a limit is fully restored.

local period = tonumber(ARGV[2])
local account = redis.call('HMGET', KEYS[1], 'status', 'plan')
local counted = ARGV[3] == '1'
local plan, rpm, tpm = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
if account[2] then
  for i = 7, #ARGV, 3 do
    if ARGV[i] == account[2] then
      plan, rpm, tpm = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
      break
    end
  end
end
if account[1] == 'suspended' then
  return {-1, plan, '', 0, rpm, 0, 0, tpm, 0, 0}
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- One GCRA limit: what admitting `cost` would do to it, without writing anything.
local function gcra(key, cost, limit)
  local interval = math.floor(period / limit)
  local capacity = interval * limit
  if cost > limit then cost = limit end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  return {
    ok = new_tat - capacity <= now,
    new_tat = new_tat,
    retry = math.max(0, new_tat - capacity - now),
    remaining_before = math.floor((capacity - (tat - now)) / interval),
    remaining_after = math.floor((capacity - (new_tat - now)) / interval),
    reset_before = tat - now,
    reset_after = new_tat - now,
  }
end

local requests = gcra(KEYS[2], counted and 1 or 0, rpm)
local tokens = nil
local estimate = tonumber(ARGV[1])
if tpm > 0 then
  tokens = gcra(KEYS[3], estimate, tpm)  -- an estimate of 0 only reads the limit's state
end

if counted and (not requests.ok or (tokens and not tokens.ok)) then
  local refused_by = requests.ok and 'tokens' or 'requests'
  local retry = math.max(requests.retry, tokens and tokens.retry or 0)
  local t_remaining, t_reset = tpm, 0
  if tokens then t_remaining, t_reset = tokens.remaining_before, tokens.reset_before end
  return {0, plan, refused_by, retry, rpm, requests.remaining_before, requests.reset_before,
    tpm, t_remaining, t_reset}
end

local function store(key, limit)
  redis.call('SET', key, string.format('%d', limit.new_tat), 'PX', math.ceil(limit.reset_after / 1000))
end

if counted then
  store(KEYS[2], requests)
end
local t_remaining, t_reset = tpm, 0
if tokens then
  if estimate > 0 then
    store(KEYS[3], tokens)
  end
  t_remaining, t_reset = tokens.remaining_after, tokens.reset_after
end
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'last_used', string.format('%d.%06d', time[1], time[2]))
end
return {1, plan, '', 0, rpm, requests.remaining_after, requests.reset_after, tpm, t_remaining, t_reset}
