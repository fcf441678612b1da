"""Circuit breakers per provider, shared by every router replica through Redis.

Semantics follow resilience4j: a sliding window (the last N calls, or the calls of the last N
seconds) judged once it holds ``min_calls``; a failure rate or slow-call rate at or over its
threshold opens the breaker; OPEN waits ``open_seconds * multiplier**(trips-1)`` (capped),
then the next caller moves it to HALF_OPEN, where ``half_open_calls`` trial calls are let
through: all succeed -> CLOSED (trips reset), one fails -> OPEN again with a longer wait.

The state lives in Redis (a hash and a window list per provider) and every transition happens
inside a Lua script, so replicas cannot race each other; transitions are published on a
channel. Each replica keeps a local copy of every state, refreshed by that channel and a
periodic read, so the hot check (``check``) touches no network: CLOSED and "OPEN, wait not
over" are decided locally in about a microsecond; only the rare OPEN->HALF_OPEN hand-over and
trial permits go to Redis. ``record`` writes every outcome through to Redis and adopts the
state the script returns. Time comes from an injectable clock (unix seconds), which is what
the scripts compare against, so tests can move time forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from masterx_runtime.tasks import stop_tasks

log = logging.getLogger("masterx.router.breaker")


class BreakerState(StrEnum):
    """A breaker's state; the values are what Redis and the Lua scripts store."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Gate(StrEnum):
    """The local hot-path answer of ``check``: call freely, skip, or ask Redis for a trial permit."""

    FREE = "free"
    SKIP = "skip"
    PROBE = "probe"


CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

BREAKER_STATE = Gauge(
    "masterx_router_breaker_state", "Circuit breaker state per provider (0 closed, 1 half_open, 2 open)", ["provider"]
)
BREAKER_TRANSITIONS = Counter(
    "masterx_router_breaker_transitions_total",
    "Breaker transitions made by this replica",
    ["provider", "from_state", "to_state"],
)

Clock = Callable[[], float]

# KEYS: hash, window. ARGV: now, failed, slow, ignored, permit, wtype, wsize, min_calls, failure_rate,
# slow_rate, open_base, open_mult, open_max, half_open_calls, channel, name
_RECORD = """
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
_ACQUIRE = """
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
_READ = """
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


@dataclass(frozen=True)
class BreakerConfig:
    window_type: str = "count"  # "count" | "time"
    window_size: int = 20  # calls, or seconds for a time window
    min_calls: int = 5
    failure_rate: float = 0.5
    slow_call_seconds: float = 20.0
    slow_call_rate: float = 0.8
    open_seconds: float = 10.0
    open_multiplier: float = 2.0
    open_max_seconds: float = 300.0
    half_open_calls: int = 2
    #: A trial permit whose result never came back (crashed replica) is reclaimed after this long.
    permit_ttl_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.window_type not in ("count", "time"):
            raise ValueError("window_type must be 'count' or 'time'")


@dataclass
class BreakerView:
    """What this replica knows about one provider's breaker."""

    state: BreakerState = CLOSED
    open_until: float = 0.0
    trips: int = 0
    window_calls: int = 0
    window_failures: int = 0

    @property
    def failure_rate(self) -> float:
        return self.window_failures / self.window_calls if self.window_calls else 0.0


@dataclass(frozen=True)
class Permit:
    """Permission to call a provider; ``trial`` when it is one of the HALF_OPEN trial calls."""

    allowed: bool
    state: BreakerState
    trial: bool = False


class BreakerBoard:
    """All providers' breakers for one router replica."""

    def __init__(
        self,
        redis: aioredis.Redis,
        providers: Iterable[str],
        config: BreakerConfig = BreakerConfig(),
        *,
        key_prefix: str = "masterx:",
        clock: Clock = time.time,
        refresh_seconds: float = 1.0,
    ) -> None:
        self.redis = redis
        self.config = config
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.prefix = f"{key_prefix}router:breaker:"
        self.channel = f"{key_prefix}router:breaker-events"
        self.views: dict[str, BreakerView] = {name: BreakerView() for name in providers}
        self._record = redis.register_script(_RECORD)
        self._acquire = redis.register_script(_ACQUIRE)
        self._read = redis.register_script(_READ)
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: Any = None
        for name in self.views:
            BREAKER_STATE.labels(name).set(0)

    def _keys(self, name: str) -> list[str]:
        return [self.prefix + name, self.prefix + name + ":win"]

    # --- lifecycle

    async def start(self) -> None:
        """Load every state, then follow changes (pub/sub) and re-read periodically."""
        await self.refresh()
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel)
        self._tasks = [
            asyncio.create_task(self._listen(), name="breaker-events"),
            asyncio.create_task(self._refresh_loop(), name="breaker-refresh"),
        ]

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks = []
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
            self._pubsub = None

    async def refresh(self) -> None:
        """Read every provider's state and window counts from Redis (one pipeline)."""
        names = list(self.views)
        pipe = self.redis.pipeline(transaction=False)
        now = self.clock()
        for name in names:
            await self._read(
                keys=self._keys(name), args=[now, self.config.window_type, self.config.window_size], client=pipe
            )
        results = await pipe.execute()
        for name, res in zip(names, results, strict=True):
            state, open_until, trips, wn, wf = res
            self._adopt(name, BreakerState(_s(state)), float(open_until), int(trips), cause="refresh")
            view = self.views[name]
            view.window_calls, view.window_failures = int(wn), int(wf)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("breaker refresh failed", extra={"error": str(exc)})

    async def _listen(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    name, state, open_until, trips = _s(message["data"]).split("|")
                    if name in self.views:
                        self._adopt(name, BreakerState(state), float(open_until), int(trips), cause="peer")
            except (RedisError, OSError) as exc:
                log.warning("breaker event stream lost; periodic refresh continues", extra={"error": str(exc)})
                await asyncio.sleep(self.refresh_seconds)
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.subscribe(self.channel)

    # --- the hot path

    def check(self, name: str) -> Gate:
        """Local decision: FREE (closed: call freely), SKIP (open), or PROBE (ask Redis for a trial)."""
        view = self.views[name]
        if view.state == CLOSED:
            return Gate.FREE
        if view.state == OPEN and self.clock() < view.open_until:
            return Gate.SKIP
        return Gate.PROBE

    def state_for_ranking(self, name: str) -> BreakerState:
        """The state as a candidate list shows it (an expired OPEN is ready for trials: HALF_OPEN)."""
        return _GATE_STATE[self.check(name)]

    async def acquire(self, name: str) -> Permit:
        """Permission for one call: free when CLOSED, one of the limited trials when HALF_OPEN."""
        local = self.check(name)
        if local == Gate.FREE:
            return Permit(True, CLOSED)
        if local == Gate.SKIP:
            return Permit(False, OPEN)
        c = self.config
        try:
            res = await self._acquire(
                keys=[self.prefix + name],
                args=[self.clock(), c.half_open_calls, c.permit_ttl_seconds, self.channel, name],
            )
        except (RedisError, OSError) as exc:
            log.warning("breaker trial permit not obtained", extra={"provider": name, "error": str(exc)})
            return Permit(False, self.views[name].state)
        state, open_until, trips, allowed = BreakerState(_s(res[0])), float(res[1]), int(res[2]), int(res[3])
        self._adopt(name, state, open_until, trips, cause="acquire", mine=True)
        return Permit(bool(allowed), state, trial=bool(allowed) and state == HALF_OPEN)

    async def record(
        self, name: str, permit: Permit, *, ok: bool, seconds: float, ignored: bool = False
    ) -> BreakerState:
        """Write one call's outcome through to Redis; returns the state afterwards."""
        c = self.config
        slow = (not ignored) and seconds >= c.slow_call_seconds
        failed = (not ignored) and not ok
        try:
            res = await self._record(
                keys=self._keys(name),
                args=[
                    self.clock(),
                    int(failed),
                    int(slow),
                    int(ignored),
                    int(permit.trial),
                    c.window_type,
                    c.window_size,
                    c.min_calls,
                    c.failure_rate,
                    c.slow_call_rate,
                    c.open_seconds,
                    c.open_multiplier,
                    c.open_max_seconds,
                    c.half_open_calls,
                    self.channel,
                    name,
                ],
            )
        except (RedisError, OSError) as exc:
            log.warning("breaker record failed", extra={"provider": name, "error": str(exc)})
            return self.views[name].state
        state, open_until, trips, wn, wf = BreakerState(_s(res[0])), float(res[1]), int(res[2]), res[4], res[5]
        self._adopt(name, state, open_until, trips, cause="record", mine=True)
        view = self.views[name]
        view.window_calls, view.window_failures = int(wn), int(wf)
        return state

    def _adopt(
        self, name: str, state: BreakerState, open_until: float, trips: int, *, cause: str, mine: bool = False
    ) -> None:
        view = self.views[name]
        before = view.state
        view.state, view.open_until, view.trips = state, open_until, trips
        if state in (OPEN, HALF_OPEN):
            view.window_calls = view.window_failures = 0
        BREAKER_STATE.labels(name).set(STATE_VALUE.get(state, 0))
        if before != state:
            if mine:
                BREAKER_TRANSITIONS.labels(name, before, state).inc()
            log.info(
                "breaker transition",
                extra={
                    "provider": name,
                    "from_state": before,
                    "to_state": state,
                    "trips": trips,
                    "open_until": open_until,
                    "cause": cause,
                },
            )


_GATE_STATE = {Gate.FREE: CLOSED, Gate.SKIP: OPEN, Gate.PROBE: HALF_OPEN}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
