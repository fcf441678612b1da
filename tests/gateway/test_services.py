"""The gateway in front of real services run in-process (reasoning on a real MongoDB; emotion
with its model when one is available): practice endpoints, the budget in a chat turn, mapping
of the services' own errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.grpc_server import serving
from services.reasoning.app import ReasoningApp
from services.reasoning.config import ReasoningSettings
from tests.gateway.harness import gateway_settings, gateway_with_emotion, peers_at, running_gateway


@pytest.fixture
async def reasoning_gateway(mongo_url: str, mongo_db_name: str) -> AsyncIterator[httpx.AsyncClient]:
    """Real reasoning service (emotion, router and benchmark down) behind the gateway."""
    app = ReasoningApp(
        ReasoningSettings(),
        mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
        peers=peers_at(),
    )
    async with serving(app) as (server, _):
        peers = peers_at(reasoning=f"127.0.0.1:{server.port}")
        async with running_gateway(gateway_settings(), peers) as (url, _), httpx.AsyncClient(base_url=url) as c:
            yield c


async def test_practice_plan_problem_explain_and_mastery(reasoning_gateway: httpx.AsyncClient) -> None:
    c = reasoning_gateway
    plan = await c.post("/api/v1/practice/plan", json={"student_id": "kid-1", "slots": 3, "seed": 5})
    assert plan.status_code == 200, plan.text
    slots = plan.json()["slots"]
    assert len(slots) == 3
    assert all(s["purpose"] in ("focus", "reinforce", "review", "challenge") for s in slots)

    resp = await c.post(
        "/api/v1/practice/problem",
        json={"student_id": "kid-1", "purpose": "focus", "part_type": "abacus", "terms": 4, "seed": 3},
    )
    assert resp.status_code == 200, resp.text
    problem = resp.json()
    assert len(problem["terms"]) == 4
    assert problem["answer"] == sum(problem["terms"])
    assert problem["trace"]["purpose"] == "focus"

    explained = await c.post("/api/v1/practice/explain", json={"trace": problem["trace"]})
    assert explained.status_code == 200, explained.text
    assert len(explained.json()["lines"]) >= len(problem["trace"]["steps"])

    bad_trace = await c.post("/api/v1/practice/explain", json={"trace": {"purpose": "sometimes"}})
    assert bad_trace.status_code == 422
    assert "purpose" in bad_trace.json()["error"]["message"]

    put = await c.put(
        "/api/v1/practice/students/kid-1/mastery",
        json={"skills": [{"skill": "fiveComplements.4=5-1", "level": "mastered", "mastered_at": 1.0}]},
    )
    assert put.status_code == 200, put.text
    got = await c.get("/api/v1/practice/students/kid-1/mastery")
    assert [s["skill"] for s in got.json()["skills"]] == ["fiveComplements.4=5-1"]
    assert got.json()["skills"][0]["level"] == "mastered"


async def test_service_errors_keep_their_meaning(reasoning_gateway: httpx.AsyncClient) -> None:
    c = reasoning_gateway
    impossible = await c.post(
        "/api/v1/practice/problem", json={"student_id": "kid-2", "terms": 4, "bounds": {"min": 50, "max": 1}}
    )
    assert impossible.status_code == 409, impossible.text  # FAILED_PRECONDITION
    err = impossible.json()["error"]
    assert (err["service"], err["code"]) == ("reasoning", "FAILED_PRECONDITION")


async def test_chat_stream_with_the_router_down_is_an_http_503_naming_it(
    reasoning_gateway: httpx.AsyncClient,
) -> None:
    """Emotion is down and only degrades; the real budget answers; the router is down before the
    stream starts, so the answer is its HTTP status (not 200 plus an error event)."""
    resp = await reasoning_gateway.post(
        "/api/v1/chat/stream",
        json={"message": "Prove that the square root of 2 is irrational, step by step", "deep_thinking": False},
    )
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["service"] == "router"
    plain = await reasoning_gateway.post("/api/v1/chat", json={"message": "hi", "deep_thinking": False})
    assert plain.status_code == 503 and plain.json()["error"]["service"] == "router"


@pytest.fixture
async def emotion_gateway(mongo_url: str, mongo_db_name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_with_emotion(mongo_url, mongo_db_name) as c:
        yield c


async def test_emotion_endpoint_and_trajectory(emotion_gateway: httpx.AsyncClient) -> None:
    c = emotion_gateway
    resp = await c.post(
        "/api/v1/emotion", json={"text": "I still don't get fractions and I'm so tired", "user_id": "u9"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["scores"]) == 28
    assert body["primary"] == max(body["scores"], key=lambda s: s["probability"])["label"]
    assert body["learning_state"] != "unspecified"
    assert all(0 <= v <= 1 for v in body["pad"].values())
    too_long = await c.post("/api/v1/emotion", json={"text": "x" * 20_000})
    assert too_long.status_code == 422
    await c.post("/api/v1/emotion", json={"text": "ok that makes sense now", "user_id": "u9"})
    trajectory = await c.get("/api/v1/students/u9/trajectory")
    assert trajectory.status_code == 200, trajectory.text
    assert len(trajectory.json()["history"]) >= 1
    unknown = await c.get("/api/v1/students/nobody-here/trajectory")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["service"] == "emotion"
