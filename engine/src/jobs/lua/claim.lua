-- ARGV: prefix, now, worker, lease_ms, max, then the types to claim (all when none). Returns the claimed jobs' ids in
-- claim order; the caller reads their fields in one pipelined round trip (HGETALL from a script costs redis-server
-- a conversion to Lua and back for every field, more than the command itself).
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
-- The head of each type's queue (up to `max` each), merged by score: priority first, then sequence (scores are
-- unique: the sequence is part of them). Counts change once per status for the whole claim.
local heads = {}
for _, ty in ipairs(types) do
  local h = redis.call('ZRANGE', key('queue:' .. ty), 0, max - 1, 'WITHSCORES')
  for k = 1, #h, 2 do heads[#heads + 1] = {h[k], tonumber(h[k + 1]), ty} end
end
table.sort(heads, function(a, b) return a[2] < b[2] end)
local ids, running, leases, queues = {}, {}, {}, {}
-- Numbers given to redis.call are formatted with %.17g for each use: the times are spelled out once per call.
-- %.0f, not %d: a lease of any length stays a whole number of milliseconds (%d takes a C long).
local s_now, s_until, s_now_us = string.format('%.0f', now), string.format('%.0f', now + lease), string.format('%.0f', now_us)
for k = 1, math.min(max, #heads) do
  local id, score, ty = heads[k][1], heads[k][2], heads[k][3]
  local j = job(id)
  queues[ty] = queues[ty] or {}
  table.insert(queues[ty], id)
  ids[#ids + 1] = id
  running[#running + 1] = string.format('%d', score % 1e12)
  running[#running + 1] = id
  leases[#leases + 1] = s_until
  leases[#leases + 1] = id
  redis.call('HINCRBY', j, 'attempts', '1')
  redis.call('HSET', j, 'status', 'running', 'updated_at', s_now, 'worker_id', worker, 'started_at', s_now,
    'lease_until', s_until, 'progress', '', 'started_us', s_now_us)
end
if #ids > 0 then
  for ty, queued in pairs(queues) do batched('ZREM', key('queue:' .. ty), queued) end
  batched('ZREM', key('status:queued'), ids)
  batched('ZADD', key('status:running'), running)
  batched('ZADD', key('leases'), leases)
  redis.call('HINCRBY', key('counts'), 'queued', -#ids)
  redis.call('HINCRBY', key('counts'), 'running', #ids)
end
return ids
