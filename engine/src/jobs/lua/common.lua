-- Shared by every script: the prefix, the clock, and moving a job between statuses (keeping the counts).
-- ARGV[1] is the prefix; ARGV[2] the time in milliseconds when the client's clock overrides the server's (tests
-- only), else empty: the server's clock.
local p = ARGV[1]
local now, now_us
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
  now_us = now * 1000
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function key(k) return p .. ':' .. k end
local function job(id) return p .. ':job:' .. id end
local function move(id, from, to)
  redis.call('HINCRBY', key('counts'), from, -1)
  redis.call('HINCRBY', key('counts'), to, 1)
  redis.call('HSET', job(id), 'status', to, 'updated_at', now)
end
local function enqueue(id)
  local j = job(id)
  redis.call('HSET', j, 'queued_us', now_us)
  local ty = redis.call('HGET', j, 'type')
  local score = (3 - tonumber(redis.call('HGET', j, 'priority'))) * 1e12 + tonumber(redis.call('HGET', j, 'seq'))
  redis.call('ZADD', key('queue:' .. ty), score, id)
  redis.call('SADD', key('types'), ty)
end
local function finished(id)
  redis.call('HSET', job(id), 'finished_at', now)
  redis.call('ZADD', key('finished'), now, id)
  redis.call('ZREM', key('leases'), id)
end
-- A job nobody works on any more (its lease ran out, or its worker is gone): back to the queue, or dead with no
-- attempt left, or cancelled if a cancel was pending.
local function requeue(id)
  redis.call('ZREM', key('leases'), id)
  local j = job(id)
  local st = redis.call('HGET', j, 'status')
  redis.call('HSET', j, 'error', 'its worker stopped renewing the lease', 'worker_id', '')
  if st == 'cancelling' then
    move(id, st, 'cancelled'); finished(id)
  elseif st == 'running' then
    if tonumber(redis.call('HGET', j, 'attempts')) >= tonumber(redis.call('HGET', j, 'max_attempts')) then
      move(id, st, 'dead'); finished(id)
    else
      move(id, st, 'queued'); enqueue(id)
    end
  end
end
