-- ARGV: prefix, now, then per job: id, type, target, payload, priority (0-3), max_attempts, delay_ms. Returns the
-- count.
local count = (#ARGV - 2) / 7
local last = redis.call('INCRBY', key('seq'), count)
local seq = last - count
local types, queued, scheduled = {}, 0, 0
for i = 3, #ARGV, 7 do
  local id, ty, target, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local priority, max_attempts, delay = tonumber(ARGV[i + 4]), ARGV[i + 5], tonumber(ARGV[i + 6])
  seq = seq + 1
  local j = job(id)
  redis.call('HSET', j, 'id', id, 'type', ty, 'target', target, 'payload', payload, 'priority', priority,
    'attempts', 0, 'max_attempts', max_attempts, 'created_at', now, 'updated_at', now, 'seq', seq,
    'metadata', '{}', 'queued_us', now_us, 'status', delay > 0 and 'scheduled' or 'queued')
  redis.call('ZADD', key('all'), seq, id)
  if delay > 0 then
    redis.call('HSET', j, 'scheduled_at', now + delay)
    redis.call('ZADD', key('scheduled'), now + delay, id)
    scheduled = scheduled + 1
  else
    redis.call('ZADD', key('queue:' .. ty), (3 - priority) * 1e12 + seq, id)
    types[ty] = true
    queued = queued + 1
  end
end
for ty in pairs(types) do redis.call('SADD', key('types'), ty) end
if queued > 0 then redis.call('HINCRBY', key('counts'), 'queued', queued) end
if scheduled > 0 then redis.call('HINCRBY', key('counts'), 'scheduled', scheduled) end
-- Wake one idle worker (it blocks on this list instead of polling).
redis.call('LPUSH', key('wake'), 1)
redis.call('LTRIM', key('wake'), 0, 0)
return count
