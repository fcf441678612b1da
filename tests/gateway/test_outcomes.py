"""POST /api/v1/outcomes in front of the real emotion service and MongoDB: a one-click outcome
lands in MongoDB against its turn; unknown turns and bad values are 4xx and store nothing.
Also: urgency and calibrated Ekman groups on the gateway's emotion JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from masterx.common.v1 import common_pb2
from services.gateway import views
from services.gateway.routes_outcomes import HELPED_OUTCOME
from tests.gateway.harness import gateway_with_emotion


@pytest.fixture
async def gateway(mongo_url: str, mongo_db_name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_with_emotion(mongo_url, mongo_db_name) as c:
        yield c


async def _outcomes(mongo_url: str, db: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        return await client[db]["emotion_outcomes"].find({}).to_list()
    finally:
        await client.close()


async def test_one_click_outcome_lands_in_mongodb(
    gateway: httpx.AsyncClient, mongo_url: str, mongo_db_name: str
) -> None:
    analysed = await gateway.post(
        "/api/v1/emotion",
        json={"text": "I'm so frustrated, nothing works", "user_id": "s-7"},
        headers={"X-Request-ID": "turn-abc"},
    )
    assert analysed.status_code == 200, analysed.text
    body = analysed.json()
    assert body["request_id"] == "turn-abc"
    assert body["urgency"] is not None and 0 <= body["urgency"]["probability"] <= 1
    assert 1 <= body["urgency"]["score"] <= 7
    assert len(body["ekman"]["probabilities"]) == 7
    assert set(body["ekman"]["active"]) <= set(body["ekman"]["probabilities"])
    assert len(body["categories"]) == 6

    resp = await gateway.post("/api/v1/outcomes", json={"turn_id": "turn-abc", "user_id": "s-7", "helped": True})
    assert resp.status_code == 201, resp.text
    out = resp.json()
    assert out["outcome"] == "improved" and out["turn_id"] == "turn-abc" and out["outcome_id"]
    resp = await gateway.post("/api/v1/outcomes", json={"turn_id": "turn-abc", "user_id": "s-7", "helped": False})
    assert resp.status_code == 201 and resp.json()["outcome"] == "no_change"

    docs = await _outcomes(mongo_url, mongo_db_name)
    assert [d["outcome"] for d in docs] == ["improved", "no_change"]
    assert {str(d["_id"]) for d in docs} >= {out["outcome_id"]}
    d = docs[0]
    assert d["turn_id"] == "turn-abc" and d["user_id"] == "s-7"
    assert d["predicted"]["intervention_level"] == body["intervention"]["level"] == d["applied_level"]
    assert d["probabilities"]["annoyance"] == pytest.approx(
        next(s["probability"] for s in body["scores"] if s["label"] == "annoyance"), abs=1e-4
    )
    assert d["urgency"]["probability"] == pytest.approx(body["urgency"]["probability"], abs=1e-4)


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"turn_id": "never-seen", "user_id": "s-8", "helped": True}, 404, "turn_id"),
        ({"turn_id": "turn-x", "user_id": "not-the-student", "helped": True}, 404, "turn_id"),
        ({"turn_id": "turn-x", "user_id": "s-8", "helped": "maybe"}, 422, "helped"),
        ({"turn_id": "turn-x", "user_id": "s-8"}, 422, "helped"),
        ({"turn_id": "turn-x", "user_id": "s-8", "helped": True, "outcome": "resolved"}, 422, "helped"),
        ({"turn_id": "turn-x", "user_id": "s-8", "outcome": "delighted"}, 422, "outcome"),
        ({"turn_id": "turn x!", "user_id": "s-8", "helped": True}, 422, "turn_id"),
        ({"turn_id": "", "user_id": "s-8", "helped": True}, 422, "turn_id"),
        ({"user_id": "s-8", "helped": True}, 422, "turn_id"),
        ({"turn_id": "turn-x", "user_id": "bad user id", "helped": True}, 422, "user_id"),
        ({"turn_id": "turn-x", "user_id": "s-8", "helped": True, "extra": 1}, 422, "extra"),
    ],
)
async def test_bad_outcomes_are_4xx_and_store_nothing(
    gateway: httpx.AsyncClient,
    mongo_url: str,
    mongo_db_name: str,
    payload: dict[str, Any],
    status: int,
    field: str,
) -> None:
    r = await gateway.post(
        "/api/v1/emotion", json={"text": "why is this wrong?", "user_id": "s-8"}, headers={"X-Request-ID": "turn-x"}
    )
    assert r.status_code == 200
    resp = await gateway.post("/api/v1/outcomes", json=payload)
    assert resp.status_code == status, resp.text
    assert field in (resp.json()["error"].get("field", "") + resp.json()["error"]["message"])
    assert await _outcomes(mongo_url, mongo_db_name) == []


def test_emotion_view_carries_urgency_ekman_and_categories() -> None:
    r = common_pb2.EmotionResult(
        primary_emotion="annoyance",
        ekman_scores=[common_pb2.EkmanScore(group="anger", probability=0.71234)],
        ekman_active=["anger"],
        urgency=common_pb2.Urgency(probability=0.8, score=4.56789, model_version="heads-1"),
        category_scores=[common_pb2.CategoryScore(category=common_pb2.CATEGORY_EMPATHY, probability=1.0)],
        followup_probability=0.1,
    )
    v = views.emotion(r)
    assert v["ekman"] == {"probabilities": {"anger": 0.7123}, "active": ["anger"]}
    assert v["urgency"] == {"probability": 0.8, "score": 4.57, "model_version": "heads-1"}
    assert v["categories"] == {"empathy": 1.0} and v["followup_probability"] == 0.1
    assert views.emotion(common_pb2.EmotionResult())["urgency"] is None
    assert HELPED_OUTCOME == {True: "improved", False: "no_change"}
