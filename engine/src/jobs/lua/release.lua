-- ARGV: prefix, now, worker, then the ids of jobs the worker claimed and never started. Each goes back to its place
-- in the queue (its priority and sequence; its queue time kept), the attempt its claim counted taken back, or is
-- cancelled when a cancel was asked meanwhile. Returns how many were given back.
local worker = ARGV[3]
local n = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local j = job(id)
  local st = redis.call('HGET', j, 'status')
  if (st == 'running' or st == 'cancelling') and redis.call('HGET', j, 'worker_id') == worker then
    redis.call('ZREM', key('leases'), id)
    redis.call('HINCRBY', j, 'attempts', -1)
    redis.call('HSET', j, 'worker_id', '')
    redis.call('HDEL', j, 'started_at', 'started_us', 'lease_until')
    if st == 'cancelling' then
      move(id, st, 'cancelled'); finished(id)
    else
      move(id, st, 'queued')
      local ty = redis.call('HGET', j, 'type')
      local score = (3 - tonumber(redis.call('HGET', j, 'priority'))) * 1e12 + tonumber(redis.call('HGET', j, 'seq'))
      redis.call('ZADD', key('queue:' .. ty), score, id)
      redis.call('SADD', key('types'), ty)
    end
    n = n + 1
  end
end
return n
