-- Ends one lease if its deadline has passed: out of the lease set, slots released, not requeued. Its meta
-- is kept (and noted in the reclaimed set) so a re-enqueue restores its place.
-- KEYS[1] leases, KEYS[2] owners, KEYS[3] meta, KEYS[4] reclaimed
-- ARGV[1] job id, ARGV[2] slot key prefix
-- Returns 1 when the lease was dropped, 0 when it is gone or not expired.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local deadline = redis.call('ZSCORE', KEYS[1], id)
if not deadline or tonumber(deadline) >= now then
  return 0
end
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
local raw = redis.call('HGET', KEYS[3], id)
if raw then
  local m = cjson.decode(raw)
  redis.call('SREM', ARGV[2] .. 'user:' .. m.u, id)
  redis.call('SREM', ARGV[2] .. 'project:' .. m.p, id)
  redis.call('ZADD', KEYS[4], now, id)
end
return 1
