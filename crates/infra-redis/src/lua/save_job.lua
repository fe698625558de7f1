-- Writes a job's live hash unless the stored one is newer, and optionally publishes its event: either the
-- whole hash (replacing it), or only the change from the hash this process last wrote, if Redis still holds
-- that one.
-- KEYS[1] job hash
-- ARGV[1] the revision the change was computed from ('' = write the hash whole), ARGV[2] the new revision
-- (revisions are fixed-width and compare as strings), ARGV[3] channel ('' = publish nothing), ARGV[4] event
-- payload, ARGV[5] second channel for the same event ('' = none: the failures channel), ARGV[6] n,
-- ARGV[7 .. 6+n] fields to remove, ARGV[7+n ..] field, value, ... (the revision among them)
-- Returns 1 when written (and published), 0 when the stored record is newer (nothing written or published),
-- 2 when a change's base is not the stored hash (nothing written or published: write it whole).
local stored = redis.call('HGET', KEYS[1], 'rev')
if stored and stored > ARGV[2] then
  return 0
end
local n = tonumber(ARGV[6])
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
elseif stored ~= ARGV[1] then
  return 2
elseif n > 0 then
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
