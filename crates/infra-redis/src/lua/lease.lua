-- Leases the first pending job (lowest score) whose user and project have a free slot.
-- KEYS[1] pending, KEYS[2] leases, KEYS[3] meta, KEYS[4] owners
-- ARGV[1] worker id, ARGV[2] ttl ms, ARGV[3] slot key prefix,
-- ARGV[4..] tier, user limit, project limit (one triple per tier)
-- Returns false when nothing is eligible, else {job id, user id, project id, tier, deadline ms}.
-- Jobs passed over are not touched, so they keep their score and place.
local limits = {}
for i = 4, #ARGV, 3 do
  limits[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])}
end
local batch = 64
local offset = 0
while true do
  local ids = redis.call('ZRANGE', KEYS[1], offset, offset + batch - 1)
  if #ids == 0 then
    return false
  end
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', KEYS[3], id)
    if raw then
      local m = cjson.decode(raw)
      local limit = limits[m.t]
      if limit then
        local ukey = ARGV[3] .. 'user:' .. m.u
        local pkey = ARGV[3] .. 'project:' .. m.p
        if redis.call('SCARD', ukey) < limit[1] and redis.call('SCARD', pkey) < limit[2] then
          local t = redis.call('TIME')
          local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
          redis.call('ZREM', KEYS[1], id)
          redis.call('SADD', ukey, id)
          redis.call('SADD', pkey, id)
          redis.call('ZADD', KEYS[2], deadline, id)
          redis.call('HSET', KEYS[4], id, ARGV[1])
          return {id, m.u, m.p, m.t, deadline}
        end
      end
    end
  end
  offset = offset + batch
end
