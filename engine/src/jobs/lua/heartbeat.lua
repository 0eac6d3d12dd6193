-- ARGV: prefix, now, worker, lease_ms, then job ids. Renews the worker's leases; returns the ids whose cancel was asked.
local worker, lease = ARGV[3], tonumber(ARGV[4])
local cancelled = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local j = job(id)
  local st = redis.call('HGET', j, 'status')
  if redis.call('HGET', j, 'worker_id') == worker and (st == 'running' or st == 'cancelling') then
    redis.call('HSET', j, 'lease_until', now + lease)
    redis.call('ZADD', key('leases'), now + lease, id)
    if st == 'cancelling' then cancelled[#cancelled + 1] = id end
  end
end
return cancelled
