-- Give back tokens a request was counted for but did not use (its estimate exceeded its usage).
--
-- KEYS[1] the token limit's theoretical arrival time (integer µs of Redis TIME)
-- KEYS[2] optional: a hash that marks the refund given (`refunded`: the request's reservation record),
--         so that the same refund sent again (a settlement's round trip resent because its reply was
--         lost; the ingress' release and a worker's answer) gives nothing back twice
-- ARGV[1] tokens to give back, ARGV[2] the limit's emission interval in µs per token,
-- ARGV[3] with KEYS[2]: seconds a mark made on a hash that is gone lives
-- Returns the µs until the limit is fully restored after the refund; -1 when it was given already.

if KEYS[2] then
  if redis.call('HSETNX', KEYS[2], 'refunded', '1') == 0 then
    return -1
  end
  if redis.call('TTL', KEYS[2]) == -1 and redis.call('HLEN', KEYS[2]) == 1 then
    redis.call('EXPIRE', KEYS[2], ARGV[3])  -- the mark alone: the record was gone
  end
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local new_tat = math.max(now, tat - tonumber(ARGV[1]) * tonumber(ARGV[2]))
if new_tat <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return new_tat - now
