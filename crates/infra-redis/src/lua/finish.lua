-- Ends a lease held by this worker: ack (drop the job) or release (back to pending at its original score).
-- KEYS[1] leases, KEYS[2] owners, KEYS[3] meta, KEYS[4] pending, KEYS[5] reclaimed
-- ARGV[1] job id, ARGV[2] worker id, ARGV[3] slot key prefix, ARGV[4] user id, ARGV[5] project id,
-- ARGV[6] 'ack' or 'release'
-- Returns 1 when the lease was this worker's and is finished, 0 otherwise (nothing changed), 2 for a release
-- whose meta was missing (the lease is finished but the job could not be requeued).
local id = ARGV[1]
if redis.call('HGET', KEYS[2], id) ~= ARGV[2] or not redis.call('ZSCORE', KEYS[1], id) then
  return 0
end
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('SREM', ARGV[3] .. 'user:' .. ARGV[4], id)
redis.call('SREM', ARGV[3] .. 'project:' .. ARGV[5], id)
local raw = redis.call('HGET', KEYS[3], id)
if ARGV[6] == 'release' then
  if not raw then
    return 2
  end
  redis.call('ZADD', KEYS[4], cjson.decode(raw).s, id)
  return 1
end
redis.call('HDEL', KEYS[3], id)
redis.call('ZREM', KEYS[5], id)
return 1
