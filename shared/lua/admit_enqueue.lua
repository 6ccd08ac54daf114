-- Admit one completion and put its job on its queue, atomically, in one round trip: the rate limit
-- (ratelimit.lua), then the credit hold (credit_reserve.lua), then, only if both admitted it and the plan
-- that decided is the one the job was built for, the job's enqueue commands.  Composed with those two
-- scripts as local functions (LuaScript.compose), so each decides exactly as when called alone.
--
-- KEYS: the rate limit's keys (ARGV[1] of them), then the credit hold's three
-- ARGV[1] rate-limit key count, ARGV[2] rate-limit argument count, ARGV[3] credit argument count,
-- ARGV[4] the token interval (us per token) the job's billing assumed (0: the plan limits no tokens),
-- then the rate limit's arguments, the credit hold's, and the enqueue commands, each as its argument
-- count followed by the command and its arguments.
-- Returns {rate-limit reply, credit reply or nil, reply of the last enqueue command or nil}: nil credit
-- when the rate limit refused (nothing held), nil enqueue when anything refused or the plan differed.

local key_count, limit_args, credit_args = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local limit_keys, limit_argv, credit_keys, credit_argv = {}, {}, {}, {}
for i = 1, key_count do limit_keys[i] = KEYS[i] end
for i = 1, 3 do credit_keys[i] = KEYS[key_count + i] end
for i = 1, limit_args do limit_argv[i] = ARGV[4 + i] end
for i = 1, credit_args do credit_argv[i] = ARGV[4 + limit_args + i] end

local limit = ratelimit(limit_keys, limit_argv)
if limit[1] ~= 1 then
  return {limit, false, false}
end
local credit = credit_reserve(credit_keys, credit_argv)
if credit[1] ~= 1 then
  return {limit, credit, false}
end
local tokens_per_period = tonumber(limit[8]) or 0
local interval = 0
if tokens_per_period > 0 then
  interval = math.floor(tonumber(limit_argv[2]) / tokens_per_period)
end
if interval ~= tonumber(ARGV[4]) then
  return {limit, credit, false}  -- the job's billing was built for another plan: the caller enqueues it
end
local i, last = 5 + limit_args + credit_args, false
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  last = redis.call(unpack(ARGV, i + 1, i + count))
  i = i + count + 1
end
return {limit, credit, last}
