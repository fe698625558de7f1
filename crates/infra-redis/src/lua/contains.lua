-- Whether a job is pending or leased, read atomically (a release moves it from one set to the other).
-- KEYS[1] pending, KEYS[2] leases; ARGV[1] job id
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 1
end
return 0
