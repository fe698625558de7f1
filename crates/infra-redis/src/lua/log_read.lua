-- Reads a job's log stream: ARGV[1] 'fwd' (XRANGE from ARGV[2] to '+') or 'rev' (XREVRANGE from ARGV[2]
-- down to '-'), at most ARGV[3] entries. Answers a flat array: id, ts, source, text, phase per entry.
local entries
if ARGV[1] == 'fwd' then
    entries = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', ARGV[3])
else
    entries = redis.call('XREVRANGE', KEYS[1], ARGV[2], '-', 'COUNT', ARGV[3])
end
local out = {}
for _, entry in ipairs(entries) do
    local fields = {}
    local raw = entry[2]
    for j = 1, #raw, 2 do
        fields[raw[j]] = raw[j + 1]
    end
    out[#out + 1] = entry[1]
    out[#out + 1] = fields['ts'] or ''
    out[#out + 1] = fields['source'] or ''
    out[#out + 1] = fields['text'] or ''
    out[#out + 1] = fields['phase'] or ''
end
return out
