"""POST /api/v1/route in front of the real router (fake LLM over HTTP): a dry run, no provider call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from masterx_runtime.testing.fake_llm import FakeLLMServer
from masterx_runtime.testing.grpc_server import serving
from services.router.app import RouterApp
from tests.gateway.harness import gateway_settings, peers_at, running_gateway


@pytest.fixture
async def routed(router_base_env: dict[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, FakeLLMServer]]:
    async with FakeLLMServer() as fake:
        providers = [
            fake.provider_entry("strong", input_price_per_mtok=5, output_price_per_mtok=15, quality={"default": 90}),
            fake.provider_entry("cheap", input_price_per_mtok=0.05, output_price_per_mtok=0.1, quality={"default": 62}),
        ]
        env = {
            **router_base_env,
            "ROUTER_CATEGORY_EMOTION_ADDR": "",
            "ROUTER_PROVIDERS_JSON": json.dumps(providers),
        }
        async with serving(RouterApp(env)) as (router, _):
            peers = peers_at(router=f"127.0.0.1:{router.port}")
            async with (
                running_gateway(gateway_settings(), peers) as (url, _),
                httpx.AsyncClient(base_url=url, timeout=30) as client,
            ):
                yield client, fake


async def test_route_returns_the_ranked_decision_without_a_provider_call(
    routed: tuple[httpx.AsyncClient, FakeLLMServer],
) -> None:
    client, fake = routed
    hard = await client.post("/api/v1/route", json={"message": "Prove it", "category": "math", "complexity": 0.95})
    easy = await client.post("/api/v1/route", json={"message": "2 + 2?", "category": "math", "complexity": 0.05})
    assert hard.status_code == 200, hard.text
    body = hard.json()
    assert body["provider"] == "strong" and easy.json()["provider"] == "cheap"
    assert [c["provider"] for c in body["candidates"]] == ["strong", "cheap"]
    assert body["complexity_source"] == "request" and body["reasons"]
    assert all(c["score_source"] == "config" for c in body["candidates"])
    bad = await client.post("/api/v1/route", json={"message": "x", "complexity": 2})
    assert bad.status_code in (400, 422)
    assert fake.stats("strong")["requests"] == 0 == fake.stats("cheap")["requests"]
