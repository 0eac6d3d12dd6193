-- ARGV: prefix, now, then the ids of dead workers. Requeues every leased job whose lease ran out or whose worker
-- is dead; returns their ids.
local dead = {}
for i = 3, #ARGV do dead[ARGV[i]] = true end
local out = {}
local leased = redis.call('ZRANGE', key('leases'), 0, -1, 'WITHSCORES')
for i = 1, #leased, 2 do
  local id, until_ms = leased[i], tonumber(leased[i + 1])
  if until_ms < now or dead[redis.call('HGET', job(id), 'worker_id') or ''] then
    requeue(id)
    out[#out + 1] = id
  end
end
return out
