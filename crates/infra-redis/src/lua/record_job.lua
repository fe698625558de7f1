-- Counts one job for a user's day and makes the counter expire when the day ends.
-- KEYS[1] counter; ARGV[1] expiry (unix seconds, next 00:00 UTC)
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIREAT', KEYS[1], ARGV[1])
return n
