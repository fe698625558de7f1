-- KEYS[1] the lock; ARGV[1] the holder's token. Deletes only the caller's own lock.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
