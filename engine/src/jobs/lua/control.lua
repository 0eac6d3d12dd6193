-- ARGV: prefix, now, action (cancel | retry), id. Returns the new status, or an error naming the current one.
local action, id = ARGV[3], ARGV[4]
local j = job(id)
local st = redis.call('HGET', j, 'status')
if not st then return redis.error_reply('missing') end
if action == 'cancel' then
  if st == 'queued' then
    redis.call('ZREM', key('queue:' .. redis.call('HGET', j, 'type')), id)
    move(id, st, 'cancelled'); finished(id); return 'cancelled'
  elseif st == 'waiting' then
    redis.call('ZREM', key('waiting'), id)
    move(id, st, 'cancelled'); finished(id); return 'cancelled'
  elseif st == 'scheduled' then
    redis.call('ZREM', key('scheduled'), id)
    move(id, st, 'cancelled'); finished(id); return 'cancelled'
  elseif st == 'running' or st == 'cancelling' then
    move(id, st, 'cancelling'); return 'cancelling'
  end
  return redis.error_reply('state:' .. st)
else
  if st == 'failed' or st == 'dead' or st == 'cancelled' then
    redis.call('ZREM', key('finished'), id)
    unrecord(id)
    redis.call('HSET', j, 'attempts', 0, 'error', '', 'result', '', 'finished_at', '', 'worker_id', '',
      'output', '', 'condition', '')
    move(id, st, 'queued'); enqueue(id); return 'queued'
  end
  return redis.error_reply('state:' .. st)
end
