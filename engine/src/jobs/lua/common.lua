-- Shared by every script: the prefix, the server's clock, and moving a job between statuses (keeping the counts).
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
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
