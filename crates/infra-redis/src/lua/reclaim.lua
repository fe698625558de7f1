-- Takes back leases whose deadline has passed: out of the lease set, slots released, not requeued.
-- Their meta is kept (and noted in the reclaimed set) so a re-enqueue restores their place; meta of jobs
-- reclaimed longer ago than the retention and never re-enqueued is dropped here.
-- KEYS[1] leases, KEYS[2] owners, KEYS[3] meta, KEYS[4] reclaimed, KEYS[5] pending
-- ARGV[1] slot key prefix, ARGV[2] max leases per call, ARGV[3] meta retention ms
-- Returns a flat list: job id, user id, project id, tier, ... ('' for the three when the meta is gone).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, 1000)
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[4], id)
  if not redis.call('ZSCORE', KEYS[5], id) and not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('HDEL', KEYS[3], id)
  end
end
local out = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  local raw = redis.call('HGET', KEYS[3], id)
  if raw then
    local m = cjson.decode(raw)
    redis.call('SREM', ARGV[1] .. 'user:' .. m.u, id)
    redis.call('SREM', ARGV[1] .. 'project:' .. m.p, id)
    redis.call('ZADD', KEYS[4], now, id)
    table.insert(out, id)
    table.insert(out, m.u)
    table.insert(out, m.p)
    table.insert(out, m.t)
  else
    table.insert(out, id)
    table.insert(out, '')
    table.insert(out, '')
    table.insert(out, '')
  end
end
return out
