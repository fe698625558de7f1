-- Adds a job to the pending set unless it is already pending or leased.
-- KEYS[1] pending, KEYS[2] leases, KEYS[3] meta, KEYS[4] counter, KEYS[5] reclaimed
-- ARGV[1] job id, ARGV[2] tier base score ((1000 - boost) * 1e12), ARGV[3] cap,
-- ARGV[4] user id, ARGV[5] project id, ARGV[6] tier
-- Returns {1, len} when added, {0, len} when already there, {-1, len} when the cap is reached.
local id = ARGV[1]
if redis.call('ZSCORE', KEYS[1], id) or redis.call('ZSCORE', KEYS[2], id) then
  return {0, redis.call('ZCARD', KEYS[1])}
end
local len = redis.call('ZCARD', KEYS[1])
-- A job whose lease was reclaimed still has its meta: it was admitted once, so it returns to its old place
-- without counting against the cap again.
local old = redis.call('HGET', KEYS[3], id)
local score
if old then
  score = cjson.decode(old).s
else
  if len >= tonumber(ARGV[3]) then
    return {-1, len}
  end
  local n = redis.call('INCR', KEYS[4])
  -- %.0f keeps all digits; tostring would round a 16-digit score.
  score = string.format('%.0f', tonumber(ARGV[2]) + n)
end
redis.call('ZADD', KEYS[1], score, id)
redis.call('HSET', KEYS[3], id, cjson.encode({u = ARGV[4], p = ARGV[5], t = ARGV[6], s = score}))
redis.call('ZREM', KEYS[5], id)
return {1, len + 1}
