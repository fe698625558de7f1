-- Removes a pending job. A job that is neither pending nor leased also loses any meta kept since a reclaim.
-- KEYS[1] pending, KEYS[2] leases, KEYS[3] meta, KEYS[4] reclaimed; ARGV[1] job id
-- Returns 1 when the job was pending, else 0.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
end
return removed
