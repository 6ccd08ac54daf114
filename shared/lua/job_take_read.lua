-- What a worker reads to start the job it has just moved to the tail of its queue's intermediate list,
-- in the round trip of that move: pipelined right behind the worker's BLMOVE (or LMOVE) on the same
-- connection, Redis runs it once the move is served, however long the move blocked.  Other clients'
-- commands may run between the two (another worker's move too): the caller compares the id returned
-- with its move's reply, and on a mismatch reads its job itself.
--
-- KEYS[1] the intermediate list, KEYS[2] the deployments whose breaker is not closed, KEYS[3] the queue
-- ARGV[1] rq's job hash key prefix, ARGV[2] the cancel marker key prefix, ARGV[3] the job hash's field
-- naming its reply channel
-- Returns {id, the job hash as HGETALL's flat list, EXISTS of its cancel marker, ZRANGE 0 -1 of KEYS[2],
-- LLEN of the queue, PUBSUB NUMSUB of the job's reply channel (-1: the hash names none)}; id false,
-- and nothing read, when the intermediate list is empty.

local queued = redis.call('LLEN', KEYS[3])
local id = redis.call('LINDEX', KEYS[1], -1)
if not id then
  return {false, {}, 0, {}, queued, -1}
end
local listeners = -1
local channel = redis.call('HGET', ARGV[1] .. id, ARGV[3])
if channel then
  listeners = redis.call('PUBSUB', 'NUMSUB', channel)[2]
end
return {
  id,
  redis.call('HGETALL', ARGV[1] .. id),
  redis.call('EXISTS', ARGV[2] .. id),
  redis.call('ZRANGE', KEYS[2], 0, -1),
  queued,
  listeners,
}
