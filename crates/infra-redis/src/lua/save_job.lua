-- Replaces a job's live hash unless the stored one is newer, and optionally publishes its event.
-- KEYS[1] job hash
-- ARGV[1] revision (fixed-width, compares as a string), ARGV[2] channel ('' = publish nothing),
-- ARGV[3] event payload, ARGV[4] second channel for the same event ('' = none: the failures channel),
-- ARGV[5..] field, value, field, value, ...
-- Returns 1 when written (and published), 0 when the stored record is newer (nothing written or published).
local stored = redis.call('HGET', KEYS[1], 'rev')
if stored and stored > ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if ARGV[2] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[3])
end
return 1
