-- Extends a lease still held by this worker and not yet past its deadline: an expired lease is lost, even
-- before the reconciler has recovered its job, so a worker that stalled past it stops.
-- KEYS[1] leases, KEYS[2] owners; ARGV[1] job id, ARGV[2] worker id, ARGV[3] ttl ms
-- Returns the new deadline (ms), or false when the lease is gone, someone else's, or expired.
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] or not current then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(current) < now then
  return false
end
local deadline = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[1])
return deadline
