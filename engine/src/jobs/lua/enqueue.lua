-- ARGV: prefix, now, then per job: id, type, target, payload, priority (0-3), max_attempts, delay_ms, input (JSON
-- or empty), parents (ids joined by commas, or empty). Returns the count; an error `MISSINGPARENT <id>` (and
-- nothing written) when a parent does not exist. A job with parents is `waiting` (see claim.lua).
local per = 9
for i = 3, #ARGV, per do
  for parent in string.gmatch(ARGV[i + 8], '[^,]+') do
    if redis.call('EXISTS', job(parent)) == 0 then return redis.error_reply('MISSINGPARENT ' .. parent) end
  end
end
local count = (#ARGV - 2) / per
local last = redis.call('INCRBY', key('seq'), count)
local seq = last - count
local types, queued, scheduled, waiting = {}, 0, 0, 0
for i = 3, #ARGV, per do
  local id, ty, target, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local priority, max_attempts, delay = tonumber(ARGV[i + 4]), ARGV[i + 5], tonumber(ARGV[i + 6])
  local input, parents = ARGV[i + 7], ARGV[i + 8]
  seq = seq + 1
  local j = job(id)
  local status = 'queued'
  if parents ~= '' then status = 'waiting' elseif delay > 0 then status = 'scheduled' end
  redis.call('HSET', j, 'id', id, 'type', ty, 'target', target, 'payload', payload, 'priority', priority,
    'attempts', 0, 'max_attempts', max_attempts, 'created_at', now, 'updated_at', now, 'seq', seq,
    'metadata', '{}', 'queued_us', now_us, 'status', status, 'input', input, 'parents', parents)
  redis.call('ZADD', key('all'), seq, id)
  redis.call('ZADD', key('status:' .. status), seq, id)
  if status == 'waiting' then
    redis.call('ZADD', key('waiting'), seq, id)
    waiting = waiting + 1
  elseif status == 'scheduled' then
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
if waiting > 0 then redis.call('HINCRBY', key('counts'), 'waiting', waiting) end
-- Wake one idle worker (it blocks on this list instead of polling).
redis.call('LPUSH', key('wake'), 1)
redis.call('LTRIM', key('wake'), 0, 0)
return count
