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
-- Calls `cmd` on key `k` with `args` appended, a thousand at a time (Lua unpacks a bounded number of values): one
-- call for a whole batch instead of one per job.
local function batched(cmd, k, args)
  for i = 1, #args, 1000 do
    redis.call(cmd, k, unpack(args, i, math.min(i + 999, #args)))
  end
end
local function job(id) return p .. ':job:' .. id end
-- `status:<s>` holds the jobs in status s scored by sequence (like `all`), so a list by status reads only its own.
local function move(id, from, to)
  redis.call('HINCRBY', key('counts'), from, -1)
  redis.call('HINCRBY', key('counts'), to, 1)
  redis.call('HSET', job(id), 'status', to, 'updated_at', now)
  redis.call('ZREM', key('status:' .. from), id)
  redis.call('ZADD', key('status:' .. to), redis.call('HGET', job(id), 'seq'), id)
end
-- A start latency in milliseconds kept to two significant digits: the bin of the latency histogram it counts in.
local function latency_bin(ms)
  if ms <= 0 then return '0' end
  local e = math.floor(math.log10(ms))
  local m = math.floor(ms / 10 ^ (e - 1) + 0.5)
  if m >= 100 then m = 10; e = e + 1 end
  return tostring(m * 10 ^ (e - 1))
end
-- Counts job id's end (at `at`, milliseconds) in the minute's aggregates `stats:<minute>` that `stats` sums over
-- the last hour: finished, succeeded, run_n / run_ms (its run time, when it started) and `l:<bin>` (its start
-- latency). What it added is kept in the job's `agg` field, so a retry can take it back.
local function record(id, at)
  local j = job(id)
  local f = redis.call('HMGET', j, 'status', 'started_at', 'started_us', 'queued_us')
  local minute = math.floor(at / 60000)
  local b = key('stats:' .. minute)
  local ok, run, bin = 0, '', ''
  if f[1] == 'succeeded' then ok = 1 end
  redis.call('HINCRBY', b, 'finished', 1)
  redis.call('HINCRBY', b, 'succeeded', ok)
  local started = tonumber(f[2] or '')
  if started and at >= started then
    run = tostring(at - started)
    redis.call('HINCRBY', b, 'run_n', 1)
    redis.call('HINCRBY', b, 'run_ms', at - started)
  end
  local s, q = tonumber(f[3] or ''), tonumber(f[4] or '')
  if s and q and s >= q then
    bin = latency_bin((s - q) / 1000)
    redis.call('HINCRBY', b, 'l:' .. bin, 1)
  end
  redis.call('PEXPIRE', b, 7320000)
  redis.call('HSET', j, 'agg', minute .. ',' .. ok .. ',' .. run .. ',' .. bin)
end
-- Takes back what `record` added for job id (it is retried, or purged).
local function unrecord(id)
  local j = job(id)
  local agg = redis.call('HGET', j, 'agg')
  if not agg or agg == '' then return end
  local parts = {}
  for v in string.gmatch(agg .. ',', '([^,]*),') do parts[#parts + 1] = v end
  local b = key('stats:' .. parts[1])
  if redis.call('EXISTS', b) == 1 then
    redis.call('HINCRBY', b, 'finished', -1)
    redis.call('HINCRBY', b, 'succeeded', 0 - tonumber(parts[2]))
    if parts[3] ~= '' then
      redis.call('HINCRBY', b, 'run_n', -1)
      redis.call('HINCRBY', b, 'run_ms', 0 - tonumber(parts[3]))
    end
    if parts[4] ~= '' then redis.call('HINCRBY', b, 'l:' .. parts[4], -1) end
  end
  redis.call('HSET', j, 'agg', '')
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
  record(id, now)
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
