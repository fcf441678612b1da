"""Sessions in real Redis (TTL, round trip) and the topic-change rule."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from services.router.sessions import SessionState, SessionStore, advance, cosine, judge_topic

MATH = [0.02, 0.9, 0.02, 0.02, 0.02, 0.02]
CODING = [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]
MIXED = [0.35, 0.45, 0.05, 0.05, 0.05, 0.05]


def judge(session: SessionState, category: str, confidence: float, probs: list[float], followup: float = 0.0):  # type: ignore[no-untyped-def]
    return judge_topic(
        session, category, confidence, probs, min_confidence=0.45, similarity_threshold=0.5, followup=followup
    )


def test_topic_rules() -> None:
    fresh = SessionState("s")
    assert not judge(fresh, "math", 0.9, MATH).changed
    coding = SessionState("s", provider="a", category="coding", topic_vector=CODING, turns=1)
    assert not judge(coding, "coding", 0.9, CODING).changed
    v = judge(coding, "math", 0.9, MATH)
    assert v.changed and v.category == "math"
    unsure = judge(coding, "math", 0.3, MIXED)
    assert not unsure.changed and unsure.category == "coding" and "sure" in unsure.reason
    similar = judge(SessionState("s", category="coding", topic_vector=MIXED, turns=1), "math", 0.45, MIXED)
    assert not similar.changed and "similarity" in similar.reason
    follow = judge(coding, "research", 0.97, [0.01, 0.0, 0.97, 0.0, 0.01, 0.01], followup=0.8)
    assert not follow.changed and follow.followup and follow.category == "coding"


def test_advance_keeps_histories_of_changes_and_bounded() -> None:
    s = SessionState("s")
    for provider, cat, probs in [("a", "coding", CODING), ("a", "coding", CODING), ("b", "math", MATH)]:
        s = advance(s, judge(s, cat, 0.9, probs), probs, provider, history_limit=2)
    assert s.turns == 3 and s.provider == "b" and s.category == "math"
    assert s.provider_history == ["a", "b"] and s.topic_history == ["coding", "math"]
    s = advance(s, judge(s, "coding", 0.9, CODING), CODING, "a", history_limit=2)
    assert s.topic_history == ["math", "coding"]  # capped at 2, oldest dropped
    held = advance(s, judge(s, "coding", 0.9, CODING), MIXED, "a", history_limit=5)
    assert cosine(held.topic_vector, CODING) > cosine(MIXED, CODING)  # running average, not replaced


async def test_store_round_trip_and_ttl(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    store = SessionStore(redis_client, key_prefix=redis_prefix, ttl_seconds=120)
    assert (await store.load("x")).is_new
    assert await store.load_with_ttl("x") == (None, 0)
    s = SessionState(
        "x", provider="a", category="math", topic_vector=MATH, provider_history=["a"], topic_history=["math"], turns=2
    )
    await store.save(s)
    loaded, ttl = await store.load_with_ttl("x")
    assert loaded == s and 115 <= ttl <= 120
    assert await redis_client.ttl(f"{redis_prefix}router:session:x") > 0


async def test_expired_session_starts_fresh(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    store = SessionStore(redis_client, key_prefix=redis_prefix, ttl_seconds=1)
    await store.save(SessionState("y", provider="a", category="math", turns=1))
    await redis_client.pexpire(f"{redis_prefix}router:session:y", 1)
    import asyncio

    await asyncio.sleep(0.05)
    assert (await store.load("y")).is_new


@pytest.mark.parametrize(("a", "b", "expected"), [([1, 0], [1, 0], 1.0), ([1, 0], [0, 1], 0.0), ([0, 0], [1, 0], 0.0)])
def test_cosine(a: list[float], b: list[float], expected: float) -> None:
    assert cosine(a, b) == pytest.approx(expected)
