-- Appends entries to a job's log stream, capped (approximately) at ARGV[2] entries, with a TTL of ARGV[3]
-- seconds from this write, and wakes the followers on channel ARGV[1]. The entries follow, four
-- arguments each: ts, source, text, phase. Answers the last entry's id.
local last = false
for i = 4, #ARGV, 4 do
    last = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
        'ts', ARGV[i], 'source', ARGV[i + 1], 'text', ARGV[i + 2], 'phase', ARGV[i + 3])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if last then
    redis.call('PUBLISH', ARGV[1], last)
end
return last
