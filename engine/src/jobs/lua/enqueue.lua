-- ARGV: prefix, then per job: id, type, target, payload, priority (0-3), max_attempts, delay_ms. Returns the count.
local n = 0
for i = 2, #ARGV, 7 do
  local id, ty, target, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local priority, max_attempts, delay = ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  local seq = redis.call('INCR', key('seq'))
  local status = 'queued'
  if delay > 0 then status = 'scheduled' end
  redis.call('HSET', job(id), 'id', id, 'type', ty, 'target', target, 'payload', payload, 'status', status,
    'priority', priority, 'attempts', 0, 'max_attempts', max_attempts, 'created_at', now, 'updated_at', now,
    'seq', seq, 'metadata', '{}')
  redis.call('HINCRBY', key('counts'), status, 1)
  redis.call('ZADD', key('all'), seq, id)
  if delay > 0 then
    redis.call('HSET', job(id), 'scheduled_at', now + delay)
    redis.call('ZADD', key('scheduled'), now + delay, id)
  else
    enqueue(id)
  end
  n = n + 1
end
return n
