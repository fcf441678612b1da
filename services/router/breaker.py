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
from services.router.breaker_lua import ACQUIRE, READ, RECORD

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
        self._record = redis.register_script(RECORD)
        self._acquire = redis.register_script(ACQUIRE)
        self._read = redis.register_script(READ)
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
