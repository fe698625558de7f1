-- Applies the change from the hash this process last wrote, if the hash still carries that revision.
-- KEYS[1] job hash
-- ARGV[1] the revision the change was computed from, ARGV[2] the new revision (both fixed-width),
-- ARGV[3] channel ('' = publish nothing), ARGV[4] event payload, ARGV[5] second channel ('' = none),
-- ARGV[6] n, ARGV[7 .. 6+n] fields to remove, ARGV[7+n ..] field, value, ... (the revision among them)
-- Returns 1 when written (and published), 0 when the stored record is newer (nothing written or published),
-- 2 when the hash is not the one the change was computed from (nothing written: write it whole).
local stored = redis.call('HGET', KEYS[1], 'rev')
if stored and stored > ARGV[2] then
  return 0
end
if stored ~= ARGV[1] then
  return 2
end
local n = tonumber(ARGV[6])
if n > 0 then
  redis.call('HDEL', KEYS[1], unpack(ARGV, 7, 6 + n))
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7 + n))
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[4])
end
return 1
