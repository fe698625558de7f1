-- Extends a lease still held by this worker.
-- KEYS[1] leases, KEYS[2] owners; ARGV[1] job id, ARGV[2] worker id, ARGV[3] ttl ms
-- Returns the new deadline (ms), or false when the lease is gone or someone else's.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] or not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return false
end
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[1])
return deadline
