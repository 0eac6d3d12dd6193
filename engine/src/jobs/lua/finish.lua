-- ARGV: prefix, now, worker, then per result: id, kind (succeeded | retry | failed | cancelled), value. A retry backs off
-- 1 s doubling to 5 minutes, with jitter; a job whose cancel was asked for while the attempt ran is not retried but
-- cancelled.
-- A result for a job the worker no longer holds is ignored. Returns how many were recorded.
local worker = ARGV[3]
local done = 0
for i = 4, #ARGV, 3 do
  local id, kind, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local j = job(id)
  local st = redis.call('HGET', j, 'status')
  if redis.call('HGET', j, 'worker_id') == worker and (st == 'running' or st == 'cancelling') then
    if kind == 'succeeded' then
      move(id, st, 'succeeded'); redis.call('HSET', j, 'result', value, 'error', ''); finished(id)
    elseif kind == 'cancelled' then
      move(id, st, 'cancelled'); finished(id)
    elseif kind == 'retry' and st == 'running' and tonumber(redis.call('HGET', j, 'attempts')) < tonumber(redis.call('HGET', j, 'max_attempts')) then
      local attempts = tonumber(redis.call('HGET', j, 'attempts'))
      local base = math.min(1000 * 2 ^ (attempts - 1), 300000)
      local backoff = math.floor(base * (750 + (tonumber(redis.call('HGET', j, 'seq')) * 7919 + now) % 500) / 1000)
      move(id, st, 'scheduled')
      redis.call('HSET', j, 'error', value, 'scheduled_at', now + backoff, 'worker_id', '')
      redis.call('ZREM', key('leases'), id)
      redis.call('ZADD', key('scheduled'), now + backoff, id)
    else
      local final = 'failed'
      if kind == 'retry' then
        final = 'dead'
        -- Attempts remain, so only a cancel (st == 'cancelling') stopped the retry.
        if tonumber(redis.call('HGET', j, 'attempts')) < tonumber(redis.call('HGET', j, 'max_attempts')) then
          final = 'cancelled'
        end
      end
      move(id, st, final); redis.call('HSET', j, 'error', value); finished(id)
    end
    done = done + 1
  end
end
return done
