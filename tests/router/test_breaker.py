"""Circuit breaker state machine against real Redis, with an injected clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.router.breaker import CLOSED, HALF_OPEN, OPEN, BreakerBoard, BreakerConfig, Gate


class FakeClock:
    def __init__(self, t: float = 1_763_707_048.123457) -> None:  # a real-looking time: exercises float precision
        self.t = t

    def __call__(self) -> float:
        return self.t


CFG = BreakerConfig(
    window_size=10, min_calls=4, failure_rate=0.5, slow_call_seconds=1.0, slow_call_rate=0.5,
    open_seconds=10, open_multiplier=2, open_max_seconds=35, half_open_calls=2,
)  # fmt: skip


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def board(redis: aioredis.Redis, redis_prefix: str) -> AsyncIterator[tuple[BreakerBoard, FakeClock]]:
    clock = FakeClock()
    b = BreakerBoard(redis, ["p", "q"], CFG, key_prefix=redis_prefix, clock=clock, refresh_seconds=0.05)
    await b.start()
    yield b, clock
    await b.stop()


async def call(b: BreakerBoard, name: str, ok: bool, seconds: float = 0.01) -> str | None:
    """One call through the breaker: None when refused, else the state after recording."""
    permit = await b.acquire(name)
    if not permit.allowed:
        return None
    return await b.record(name, permit, ok=ok, seconds=seconds)


async def test_full_cycle_closed_open_half_open_closed(
    board: tuple[BreakerBoard, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="masterx.router.breaker")
    b, clock = board
    assert await call(b, "p", ok=False) == CLOSED  # 1 call < min_calls
    assert await call(b, "p", ok=True) == CLOSED
    assert await call(b, "p", ok=True) == CLOSED
    assert b.views["p"].failure_rate == pytest.approx(1 / 3)
    assert await call(b, "p", ok=False) == OPEN  # 2/4 failed = threshold
    view = b.views["p"]
    assert (view.trips, view.open_until) == (1, clock.t + 10)
    assert REGISTRY.get_sample_value("masterx_router_breaker_state", {"provider": "p"}) == 2
    assert b.check("p") == Gate.SKIP and await call(b, "p", ok=True) is None

    clock.t += 10  # the wait is over: next caller probes
    assert b.check("p") == Gate.PROBE
    first = await b.acquire("p")
    assert first.allowed and first.trial and first.state == HALF_OPEN
    second = await b.acquire("p")
    assert second.allowed and second.trial
    assert not (await b.acquire("p")).allowed  # only half_open_calls trials
    assert await b.record("p", first, ok=True, seconds=0.01) == HALF_OPEN
    assert await b.record("p", second, ok=True, seconds=0.01) == CLOSED
    assert b.views["p"].trips == 0 and b.check("p") == Gate.FREE
    assert b.check("q") == Gate.FREE  # providers are independent
    assert REGISTRY.get_sample_value("masterx_router_breaker_state", {"provider": "p"}) == 0
    transitions = [(r.from_state, r.to_state) for r in caplog.records if r.msg == "breaker transition"]  # type: ignore[attr-defined]
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    counted = REGISTRY.get_sample_value(
        "masterx_router_breaker_transitions_total", {"provider": "p", "from_state": "half_open", "to_state": "closed"}
    )
    assert counted is not None and counted >= 1


async def test_failed_trial_reopens_with_growing_capped_wait(board: tuple[BreakerBoard, FakeClock]) -> None:
    b, clock = board
    waits = []
    for _ in range(4):
        if b.check("p") == Gate.FREE:
            for _ in range(4):
                await call(b, "p", ok=False)
        else:
            clock.t = b.views["p"].open_until
            assert await call(b, "p", ok=False) == OPEN  # the trial fails
        assert b.views["p"].state == OPEN
        waits.append(b.views["p"].open_until - clock.t)
    assert waits == [10, 20, 35, 35]  # 10 * 2**(trips-1), capped at 35
    assert b.views["p"].trips == 4


async def test_min_calls_and_ignored_outcomes(board: tuple[BreakerBoard, FakeClock]) -> None:
    b, _ = board
    for _ in range(3):
        assert await call(b, "p", ok=False) == CLOSED  # 100% failures but only 3 calls
    permit = await b.acquire("p")
    assert await b.record("p", permit, ok=False, seconds=5, ignored=True) == CLOSED  # e.g. client cancelled
    assert b.views["p"].window_calls == 3
    assert await call(b, "p", ok=False) == OPEN


async def test_slow_calls_open_the_breaker(board: tuple[BreakerBoard, FakeClock]) -> None:
    b, _ = board
    assert await call(b, "p", ok=True, seconds=0.1) == CLOSED
    assert await call(b, "p", ok=True, seconds=0.1) == CLOSED
    assert await call(b, "p", ok=True, seconds=2.0) == CLOSED
    assert await call(b, "p", ok=True, seconds=3.0) == OPEN  # 2/4 slow = slow_call_rate


async def test_count_window_forgets_old_calls(board: tuple[BreakerBoard, FakeClock]) -> None:
    b, _ = board
    await call(b, "p", ok=False)
    for _ in range(9):
        await call(b, "p", ok=True)
    assert (b.views["p"].window_calls, b.views["p"].failure_rate) == (10, pytest.approx(0.1))
    await call(b, "p", ok=True)  # the window holds 10 calls: the old failure drops out
    assert (b.views["p"].window_calls, b.views["p"].failure_rate) == (10, 0.0)
    for _ in range(4):
        assert await call(b, "p", ok=False) == CLOSED  # 4/10
    assert await call(b, "p", ok=False) == OPEN  # 5/10


async def test_time_window_drops_calls_older_than_the_window(redis: aioredis.Redis, redis_prefix: str) -> None:
    clock = FakeClock()
    cfg = BreakerConfig(window_type="time", window_size=60, min_calls=4, failure_rate=0.5, half_open_calls=1)
    b = BreakerBoard(redis, ["p"], cfg, key_prefix=redis_prefix, clock=clock)
    await b.start()
    try:
        for _ in range(3):
            assert await call(b, "p", ok=False) == CLOSED
        clock.t += 61  # those failures leave the window
        for _ in range(3):
            assert await call(b, "p", ok=True) == CLOSED
        assert b.views["p"].window_calls == 3
        assert await call(b, "p", ok=False) == CLOSED  # 1/4 failed
        assert await call(b, "p", ok=False) == CLOSED  # 2/5
        assert await call(b, "p", ok=False) == OPEN  # 3/6 = 0.5
    finally:
        await b.stop()


async def test_state_is_shared_between_two_router_replicas(redis: aioredis.Redis, redis_prefix: str) -> None:
    clock = FakeClock()
    a = BreakerBoard(redis, ["p"], CFG, key_prefix=redis_prefix, clock=clock, refresh_seconds=5)
    b = BreakerBoard(redis, ["p"], CFG, key_prefix=redis_prefix, clock=clock, refresh_seconds=5)
    await a.start()
    await b.start()
    try:
        # Failures recorded half by each replica add up in one shared window.
        await call(a, "p", ok=False)
        await call(b, "p", ok=False)
        await call(a, "p", ok=True)
        assert await call(b, "p", ok=False) == OPEN
        for _ in range(100):  # replica A learns through pub/sub, long before its 5 s refresh
            if a.check("p") == Gate.SKIP:
                break
            await asyncio.sleep(0.01)
        assert a.check("p") == Gate.SKIP and a.views["p"].trips == 1
        assert await call(a, "p", ok=True) is None

        clock.t += 10
        ta, tb = await a.acquire("p"), await b.acquire("p")
        assert ta.trial and tb.trial  # two trials in total across replicas...
        assert not (await a.acquire("p")).allowed and not (await b.acquire("p")).allowed  # ...no more
        await a.record("p", ta, ok=True, seconds=0.01)
        assert await b.record("p", tb, ok=True, seconds=0.01) == CLOSED
        for _ in range(100):
            if a.check("p") == Gate.FREE:
                break
            await asyncio.sleep(0.01)
        assert a.check("p") == Gate.FREE
    finally:
        await a.stop()
        await b.stop()


async def test_lost_trial_permit_is_reclaimed(board: tuple[BreakerBoard, FakeClock]) -> None:
    b, clock = board
    for _ in range(4):
        await call(b, "p", ok=False)
    clock.t += 10
    assert (await b.acquire("p")).trial
    assert (await b.acquire("p")).trial
    assert not (await b.acquire("p")).allowed  # both permits out, results never come back
    clock.t += CFG.permit_ttl_seconds + 1
    assert (await b.acquire("p")).trial
