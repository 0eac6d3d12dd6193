-- ARGV: prefix, now, start. Brings a store written before schema 4 up to it, 2,000 jobs of `all` per call from
-- `start`: each job joins its status's index `status:<s>`. The call that reaches the end also counts the jobs that
-- finished in the last hour in the per-minute aggregates (those not counted yet). Returns the next start, or -1
-- when done.
local start = tonumber(ARGV[3])
local ids = redis.call('ZRANGE', key('all'), start, start + 1999, 'WITHSCORES')
for i = 1, #ids, 2 do
  local st = redis.call('HGET', job(ids[i]), 'status')
  if st then redis.call('ZADD', key('status:' .. st), ids[i + 1], ids[i]) end
end
if #ids == 4000 then return start + 2000 end
local recent = redis.call('ZRANGEBYSCORE', key('finished'), now - 3600000, '+inf', 'WITHSCORES')
for i = 1, #recent, 2 do
  local agg = redis.call('HGET', job(recent[i]), 'agg')
  if not agg or agg == '' then record(recent[i], tonumber(recent[i + 1])) end
end
return -1
