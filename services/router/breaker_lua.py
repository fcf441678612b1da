"""The breaker's Lua scripts: every state transition runs inside Redis, so replicas cannot race.

Semantics (resilience4j) are described in ``breaker.py``; the thresholds come in as ARGV from
``BreakerConfig`` (the ROUTER_BREAKER_* settings).
"""

# KEYS: hash, window. ARGV: now, failed, slow, ignored, permit, wtype, wsize, min_calls, failure_rate,
# slow_rate, open_base, open_mult, open_max, half_open_calls, channel, name
RECORD = """
local h, w = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local failed, slow, ignored, permit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local wtype, wsize, minc = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local frate, srate = tonumber(ARGV[9]), tonumber(ARGV[10])
local base, mult, maxw, hocalls = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local channel, name = ARGV[15], ARGV[16]
local function f(x) return string.format('%.17g', x) end
local v = redis.call('HMGET', h, 'state', 'open_until', 'trips', 'ho_issued', 'ho_ok', 'wn', 'wf', 'ws')
local state = v[1] or 'closed'
local open_until, trips = tonumber(v[2] or '0'), tonumber(v[3] or '0')
local issued, ok = tonumber(v[4] or '0'), tonumber(v[5] or '0')
local wn, wf, ws = tonumber(v[6] or '0'), tonumber(v[7] or '0'), tonumber(v[8] or '0')
local from = state
local function open_breaker()
  trips = trips + 1
  open_until = now + math.min(base * mult ^ (trips - 1), maxw)
  state = 'open'
  wn, wf, ws = 0, 0, 0
  redis.call('DEL', w)
  redis.call('HSET', h, 'state', 'open', 'open_until', f(open_until), 'trips', trips, 'ho_issued', 0, 'ho_ok', 0,
    'wn', 0, 'wf', 0, 'ws', 0, 'changed_at', f(now))
end
local function drop_oldest()
  local e = redis.call('RPOP', w)
  if e then
    local _, f, s = string.match(e, '^([^|]+)|(%d)|(%d)$')
    wn, wf, ws = wn - 1, wf - tonumber(f), ws - tonumber(s)
  end
  return e
end
if state == 'half_open' then
  if permit == 1 then
    if ignored == 1 then
      redis.call('HSET', h, 'ho_issued', math.max(issued - 1, ok))
    elseif failed == 1 or slow == 1 then
      open_breaker()
    else
      ok = ok + 1
      if ok >= hocalls then
        state, trips, open_until = 'closed', 0, 0
        redis.call('DEL', w)
        redis.call('HSET', h, 'state', 'closed', 'trips', 0, 'ho_issued', 0, 'ho_ok', 0, 'open_until', 0,
          'wn', 0, 'wf', 0, 'ws', 0, 'changed_at', f(now))
        wn, wf, ws = 0, 0, 0
      else
        redis.call('HSET', h, 'ho_ok', ok)
      end
    end
  end
elseif state == 'closed' and ignored == 0 then
  redis.call('LPUSH', w, f(now) .. '|' .. failed .. '|' .. slow)
  wn, wf, ws = wn + 1, wf + failed, ws + slow
  if wtype == 'count' then
    while wn > wsize do if not drop_oldest() then break end end
  else
    local cutoff = now - wsize
    while wn > 0 do
      local last = redis.call('LINDEX', w, -1)
      if not last or tonumber(string.match(last, '^([^|]+)')) >= cutoff then break end
      drop_oldest()
    end
  end
  if wn < 0 then wn, wf, ws = 0, 0, 0 end
  redis.call('HSET', h, 'state', 'closed', 'wn', wn, 'wf', wf, 'ws', ws)
  if wn >= minc and (wf / wn >= frate or ws / wn >= srate) then open_breaker() end
end
if state ~= from then
  redis.call('PUBLISH', channel, name .. '|' .. state .. '|' .. f(open_until) .. '|' .. trips)
end
return {state, f(open_until), trips, from, wn, wf}
"""

# KEYS: hash. ARGV: now, half_open_calls, permit_ttl, channel, name
ACQUIRE = """
local h = KEYS[1]
local now, hocalls, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function f(x) return string.format('%.17g', x) end
local v = redis.call('HMGET', h, 'state', 'open_until', 'trips', 'ho_issued', 'ho_ok', 'ho_last')
local state = v[1] or 'closed'
local open_until, trips = tonumber(v[2] or '0'), tonumber(v[3] or '0')
local issued, ok, last = tonumber(v[4] or '0'), tonumber(v[5] or '0'), tonumber(v[6] or '0')
local from = state
if state == 'closed' then return {state, f(open_until), trips, 1, from} end
if state == 'open' then
  if now < open_until then return {state, f(open_until), trips, 0, from} end
  state, issued, ok = 'half_open', 0, 0
  redis.call('HSET', h, 'state', 'half_open', 'ho_issued', 0, 'ho_ok', 0, 'changed_at', f(now))
  redis.call('PUBLISH', ARGV[4], ARGV[5] .. '|half_open|' .. f(open_until) .. '|' .. trips)
end
if issued >= hocalls and now - last > ttl then issued = ok end
if issued < hocalls then
  redis.call('HSET', h, 'ho_issued', issued + 1, 'ho_last', f(now))
  return {state, f(open_until), trips, 1, from}
end
return {state, f(open_until), trips, 0, from}
"""

# KEYS: hash, window. ARGV: now, wtype, wsize -> state, open_until, trips, window calls, window failures
READ = """
local v = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'trips', 'wn', 'wf', 'ws')
local wn, wf = tonumber(v[4] or '0'), tonumber(v[5] or '0')
if ARGV[2] == 'time' and wn > 0 then
  local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[3])
  local entries = redis.call('LRANGE', KEYS[2], 0, -1)
  wn, wf = 0, 0
  for _, e in ipairs(entries) do
    local ts, f = string.match(e, '^([^|]+)|(%d)|')
    if tonumber(ts) >= cutoff then wn, wf = wn + 1, wf + tonumber(f) end
  end
end
return {v[1] or 'closed', v[2] or '0', tonumber(v[3] or '0'), wn, wf}
"""
