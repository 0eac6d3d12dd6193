-- ARGV: prefix, now, worker, then per result: id, kind (succeeded | retry | failed | cancelled), value. A retry backs off
-- 1 s doubling to 5 minutes, with jitter; a job whose cancel was asked for while the attempt ran is not retried but
-- cancelled.
-- A result for a job the worker no longer holds is ignored. Returns how many were recorded.
-- A success or a cancel (the ends of a batch of short jobs) is recorded as `move`, `finished` and `record` would, the
-- counts and the minute's aggregates added once for the whole call.
local worker = ARGV[3]
local done = 0
local counts, minutes = {}, {}
local minute = math.floor(now / 60000)
-- Numbers given to redis.call or joined into strings are formatted for each use: the time and the minute are
-- spelled out once per call, and each latency bin once.
local s_now, s_minute = string.format('%.0f', now), string.format('%.0f', minute)
local bins = {}
local function bin_of(us)
  local ms = us / 1000
  local b = bins[ms]
  if not b then b = latency_bin(ms); bins[ms] = b end
  return b
end
local function bump(t, field, by) t[field] = (t[field] or 0) + by end
-- The index changes of those ends, made once per call: ids leaving each status, (seq, id) entering each, (now, id)
-- into `finished`, ids out of `leases`.
local from, to, ends, unleased = {}, {}, {}, {}
local function append(t, status, a, b)
  local list = t[status]
  if not list then list = {}; t[status] = list end
  list[#list + 1] = a
  if b then list[#list + 1] = b end
end
for i = 4, #ARGV, 3 do
  local id, kind, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local j = job(id)
  local f = redis.call('HMGET', j, 'status', 'worker_id', 'seq', 'started_at', 'started_us', 'queued_us')
  local st = f[1]
  if f[2] == worker and (st == 'running' or st == 'cancelling') then
    if kind == 'succeeded' or kind == 'cancelled' then
      bump(counts, st, -1); bump(counts, kind, 1)
      append(from, st, id); append(to, kind, f[3], id)
      ends[#ends + 1] = s_now; ends[#ends + 1] = id
      unleased[#unleased + 1] = id
      local ok, run, bin = '0', '', ''
      if kind == 'succeeded' then ok = '1'; bump(minutes, 'succeeded', 1) end
      bump(minutes, 'finished', 1)
      local started = tonumber(f[4] or '')
      if started and now >= started then
        run = string.format('%d', now - started); bump(minutes, 'run_n', 1); bump(minutes, 'run_ms', now - started)
      end
      local s, q = tonumber(f[5] or ''), tonumber(f[6] or '')
      if s and q and s >= q then bin = bin_of(s - q); bump(minutes, 'l:' .. bin, 1) end
      local agg = s_minute .. ',' .. ok .. ',' .. run .. ',' .. bin
      if kind == 'succeeded' then
        redis.call('HSET', j, 'status', kind, 'updated_at', s_now, 'result', value, 'error', '', 'finished_at', s_now, 'agg', agg)
      else
        redis.call('HSET', j, 'status', kind, 'updated_at', s_now, 'finished_at', s_now, 'agg', agg)
      end
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
for status, ids in pairs(from) do batched('ZREM', key('status:' .. status), ids) end
for status, entries in pairs(to) do batched('ZADD', key('status:' .. status), entries) end
batched('ZADD', key('finished'), ends)
batched('ZREM', key('leases'), unleased)
for status, n in pairs(counts) do
  if n ~= 0 then redis.call('HINCRBY', key('counts'), status, n) end
end
if next(minutes) then
  local b = key('stats:' .. minute)
  for field, n in pairs(minutes) do redis.call('HINCRBY', b, field, n) end
  redis.call('PEXPIRE', b, 7320000)
end
return done
