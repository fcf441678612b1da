"""The gateway's use of the metacognitive controller and GET /api/v1/turns/{id}/reasoning, in front
of the real reasoning service and the real router (fake LLM over HTTP; emotion down)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from masterx_runtime.config import load
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior, ReplyRule
from masterx_runtime.testing.grpc_server import serving
from services.reasoning.app import ReasoningApp
from services.reasoning.config import ReasoningSettings
from services.router.app import RouterApp
from tests.gateway.harness import gateway_settings, peers_at, running_gateway

RULES = [  # every first sample is wrong; a widening retry (its prompt names them) is right
    ReplyRule(match=r"already checked here and are wrong", reply="7 * 3 = 21, 12 + 21 = 33.\nFinal answer: 33"),
    ReplyRule(match=r"Strategy for this step", reply="12 + 7 = 19 and 19 * 3 = 57.\nFinal answer: 57"),
]


@pytest.fixture
async def gateway(
    router_base_env: dict[str, str], mongo_url: str, mongo_db_name: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with FakeLLMServer() as fake:
        fake.configure("stepper", ProviderBehavior(rules=RULES, default_reply="Here is the explanation."))
        env = {
            **router_base_env,
            "ROUTER_PROVIDERS_JSON": json.dumps([fake.provider_entry("stepper")]),
        }
        async with serving(RouterApp(env)) as (router, _):
            router_addr = f"127.0.0.1:{router.port}"
            reasoning = ReasoningApp(
                dataclasses.replace(load(ReasoningSettings, {}), judge_enabled=False),
                mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
                peers=peers_at(router=router_addr),
            )
            async with serving(reasoning) as (server, _):
                peers = peers_at(reasoning=f"127.0.0.1:{server.port}", router=router_addr)
                async with (
                    running_gateway(gateway_settings(), peers) as (url, _),
                    httpx.AsyncClient(base_url=url, timeout=30) as client,
                ):
                    yield client


async def test_a_deep_turn_is_stored_and_its_reasoning_is_returned(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post(
        "/api/v1/chat", json={"message": "What is 12 + 7 * 3?", "deep_thinking": True, "session_id": "s-1"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["thinking"]["deep_thinking"] and body["thinking"]["source"] == "user"
    assert body["reasoning"]["answer"] == "33" and body["reasoning"]["search"]["widenings"] == 1

    stored = await gateway.get(f"/api/v1/turns/{body['request_id']}/reasoning")
    assert stored.status_code == 200, stored.text
    turn = stored.json()
    assert turn["session_id"] == "s-1" and turn["thinking"]["source"] == "user"
    assert turn["reasoning"]["answer"] == "33" and turn["reasoning"]["stop_reason"] == "early_stop"
    assert [s["content"] for s in turn["reasoning"]["path"]] == [s["content"] for s in body["reasoning"]["path"]]
    assert len(turn["reasoning"]["tree"]) == 4 and turn["expires_at"] > turn["created_at"]


async def test_the_controller_decides_when_the_user_does_not(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post("/api/v1/chat", json={"message": "hello there!", "session_id": "s-2"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["thinking"]["source"] == "controller" and not body["thinking"]["deep_thinking"]
    assert body["reasoning"] is None
    assert [r["code"] for r in body["thinking"]["reasons"]][-1] == "decision"
    turn = (await gateway.get(f"/api/v1/turns/{body['request_id']}/reasoning")).json()
    assert turn["reasoning"] is None and turn["thinking"]["source"] == "controller"


async def test_unknown_and_malformed_turn_ids(gateway: httpx.AsyncClient) -> None:
    missing = await gateway.get("/api/v1/turns/no-such-turn/reasoning")
    assert missing.status_code == 404 and missing.json()["error"]["service"] == "reasoning"
    bad = await gateway.get("/api/v1/turns/a%20b/reasoning")
    assert bad.status_code == 422
