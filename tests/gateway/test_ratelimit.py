"""The gateway's GCRA rate limiter against a real Redis: counts, refusal, huge limits."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from services.gateway.ratelimit import RateLimiter


async def test_burst_then_refusal(redis_client: aioredis.Redis) -> None:
    limiter = RateLimiter(redis_client, per_minute=60, burst=3, prefix=f"t{uuid.uuid4().hex}:")
    got = [await limiter.check("1.2.3.4") for _ in range(4)]
    assert [d.allowed for d in got if d] == [True, True, True, False]
    assert [d.remaining for d in got if d] == [2, 1, 0, 0]
    assert got[3] is not None and got[3].retry_after_s >= 1


async def test_a_huge_limit_reports_a_sane_remaining_count(redis_client: aioredis.Redis) -> None:
    limiter = RateLimiter(redis_client, per_minute=100_000_000, burst=0, prefix=f"t{uuid.uuid4().hex}:")
    d = await limiter.check("1.2.3.4")
    assert d is not None and d.allowed
    assert 0 <= d.remaining <= 100_000_000
