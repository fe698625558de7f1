-- Lists leases whose deadline has passed, oldest deadline first, without taking them: each stays until
-- its job is recovered (drop_expired.lua). Also drops the meta of jobs reclaimed longer ago than the
-- retention and never re-enqueued.
-- KEYS[1] leases, KEYS[2] meta, KEYS[3] reclaimed, KEYS[4] pending
-- ARGV[1] max leases, ARGV[2] meta retention ms
-- Returns a flat list: job id, user id, project id, tier, ... ('' for the three when the meta is gone).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, 1000)
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[3], id)
  if not redis.call('ZSCORE', KEYS[4], id) and not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('HDEL', KEYS[2], id)
  end
end
local out = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(expired) do
  local raw = redis.call('HGET', KEYS[2], id)
  table.insert(out, id)
  if raw then
    local m = cjson.decode(raw)
    table.insert(out, m.u)
    table.insert(out, m.p)
    table.insert(out, m.t)
  else
    table.insert(out, '')
    table.insert(out, '')
    table.insert(out, '')
  end
end
return out
