-- ARGV: prefix, now, worker, lease_ms, max, then the types to claim (all when none). Returns each claimed job's
-- fields (HGETALL), in claim order, so a claim is one round trip.
local worker, lease, max = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
-- Leases that ran out: back to the queue, or dead with no attempt left, or cancelled if a cancel was pending.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', key('leases'), '-inf', now, 'LIMIT', 0, 1000)) do
  requeue(id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', key('scheduled'), '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', key('scheduled'), id)
  if redis.call('HGET', job(id), 'status') == 'scheduled' then move(id, 'scheduled', 'queued'); enqueue(id) end
end
-- Waiting jobs whose parents have all ended: queued when every parent succeeded and none set condition = false,
-- else skipped with the reason (the rule of store::release_verdict, which this mirrors).
for _, id in ipairs(redis.call('ZRANGE', key('waiting'), 0, 999)) do
  local j = job(id)
  local ended, reason = true, nil
  for parent in string.gmatch(redis.call('HGET', j, 'parents') or '', '[^,]+') do
    local pst = redis.call('HGET', job(parent), 'status')
    if not pst then
      reason = reason or ('skipped: parent ' .. parent .. ' is gone')
    elseif pst == 'succeeded' then
      if redis.call('HGET', job(parent), 'condition') == 'false' then
        reason = reason or ('skipped: parent ' .. parent .. ' set condition = false')
      end
    elseif pst == 'failed' or pst == 'cancelled' or pst == 'dead' or pst == 'skipped' then
      reason = reason or ('skipped: parent ' .. parent .. ' ended ' .. pst)
    else
      ended = false
      break
    end
  end
  if ended then
    redis.call('ZREM', key('waiting'), id)
    if reason == nil then
      move(id, 'waiting', 'queued'); enqueue(id)
    else
      move(id, 'waiting', 'skipped'); redis.call('HSET', j, 'error', reason); finished(id)
    end
  end
end
local types = {}
if #ARGV >= 6 then
  for i = 6, #ARGV do types[#types + 1] = ARGV[i] end
else
  types = redis.call('SMEMBERS', key('types'))
end
local out = {}
while #out < max do
  local best, best_score, best_type = nil, nil, nil
  for _, ty in ipairs(types) do
    local head = redis.call('ZRANGE', key('queue:' .. ty), 0, 0, 'WITHSCORES')
    if #head > 0 then
      local score = tonumber(head[2])
      if best_score == nil or score < best_score then best, best_score, best_type = head[1], score, ty end
    end
  end
  if best == nil then break end
  redis.call('ZREM', key('queue:' .. best_type), best)
  move(best, 'queued', 'running')
  redis.call('HINCRBY', job(best), 'attempts', 1)
  redis.call('HSET', job(best), 'worker_id', worker, 'started_at', now, 'lease_until', now + lease, 'progress', '',
    'started_us', now_us)
  redis.call('ZADD', key('leases'), now + lease, best)
  out[#out + 1] = best
end
for i, id in ipairs(out) do out[i] = redis.call('HGETALL', job(id)) end
return out
