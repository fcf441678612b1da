"""The gateway over real HTTP (uvicorn in-process) with its services down or unreachable.

Covers what the gateway decides on its own: validation, size limit, admin keys, rate limit
(real Redis), CORS, request ids, readiness, the static page, and the HTTP error for a service
that is down. Chat with live services is in test_chat.py; the whole system in test_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from masterx_runtime.stores.redis_store import RedisSettings
from masterx_runtime.testing.servers import free_port
from tests.gateway.harness import gateway_settings, peers_at, running_gateway

ADMIN_KEY = "test-admin-key-0123456789"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose four services are all down (closed ports)."""
    async with (
        running_gateway(
            gateway_settings(admin_api_keys=(ADMIN_KEY, "second-key"), max_body_bytes=4096), peers_at()
        ) as (
            url,
            _,
        ),
        httpx.AsyncClient(base_url=url, timeout=10) as c,
    ):
        yield c


def error_of(resp: httpx.Response) -> dict[str, object]:
    body = resp.json()
    assert set(body) == {"error"}, body
    err: dict[str, object] = body["error"]
    assert err["status"] == resp.status_code
    assert err["message"]
    return err


async def test_liveness_and_readiness_lists_what_is_down(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "not_ready"
    assert body["not_serving"] == ["benchmark", "emotion", "reasoning", "router"]
    assert body["dependencies"]["emotion"] == "UNREACHABLE"


async def test_service_down_is_503_naming_it(client: httpx.AsyncClient) -> None:
    for path, body, service in [
        ("/api/v1/emotion", {"text": "I am lost"}, "emotion"),
        ("/api/v1/chat", {"message": "hello"}, "router"),
        ("/api/v1/practice/plan", {"student_id": "s1"}, "reasoning"),
    ]:
        resp = await client.post(path, json=body)
        assert resp.status_code == 503, path
        err = error_of(resp)
        assert err["service"] == service
        assert err["code"] == "UNAVAILABLE"
        assert f"{service} service unavailable" in str(err["message"])
    for path, service in [("/api/v1/benchmarks?category=math", "benchmark"), ("/api/v1/provider-health", "router")]:
        resp = await client.get(path)
        assert (resp.status_code, error_of(resp)["service"]) == (503, service)


async def test_stream_answers_a_router_error_before_streaming_with_its_http_status(client: httpx.AsyncClient) -> None:
    """Emotion and reasoning only degrade; the router failing before its decision is the HTTP status."""
    resp = await client.post("/api/v1/chat/stream", json={"message": "hello", "deep_thinking": True})
    assert resp.status_code == 503
    assert resp.headers["content-type"].startswith("application/json")
    err = error_of(resp)
    assert err["service"] == "router" and err["code"] == "UNAVAILABLE"


def parse_sse(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        name, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        out.append((name, json.loads(data)))
    return out


@pytest.mark.parametrize(
    ("content", "headers", "status", "message"),
    [
        (b'{"message": "hi"', {"content-type": "application/json"}, 400, "malformed JSON body"),
        (b'["a list"]', {"content-type": "application/json"}, 400, "must be a JSON object, not list"),
        (b'{"message": "hi"}', {"content-type": "text/plain"}, 400, "Content-Type: application/json"),
        (b"{}", {"content-type": "application/json"}, 422, "message: Field required"),
        (b'{"message": "hi", "category": "cooking"}', {"content-type": "application/json"}, 422, "category"),
        (b'{"message": "hi", "surprise": 1}', {"content-type": "application/json"}, 422, "surprise: Extra inputs"),
        (b'{"message": "   "}', {"content-type": "application/json"}, 422, "message is empty"),
        (b'{"message": "hi", "cost_quality": 3}', {"content-type": "application/json"}, 422, "cost_quality"),
    ],
)
async def test_bad_input_gets_a_4xx_with_a_message(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    resp = await client.post("/api/v1/chat", content=content, headers=headers)
    assert resp.status_code == status, resp.text
    err = error_of(resp)
    assert message in str(err["message"])
    assert err["service"] == "gateway"


async def test_message_longer_than_the_limit_is_rejected() -> None:
    async with (
        running_gateway(gateway_settings(max_message_chars=10), peers_at()) as (url, _),
        httpx.AsyncClient(base_url=url) as c,
    ):
        resp = await c.post("/api/v1/chat", json={"message": "x" * 11})
        assert resp.status_code == 422
        assert error_of(resp)["field"] == "message"


async def test_huge_body_is_413_by_content_length(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/v1/chat", json={"message": "x" * 5000})
    assert resp.status_code == 413
    assert "4096 bytes" in str(error_of(resp)["message"])


async def test_huge_chunked_body_is_413_while_reading(client: httpx.AsyncClient) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"message": "'
        for _ in range(100):
            sent += 1024
            yield b"x" * 1024
        yield b'"}'

    resp = await client.post("/api/v1/chat", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "PAYLOAD_TOO_LARGE"


async def test_admin_endpoints_need_a_valid_key(client: httpx.AsyncClient) -> None:
    path = "/api/v1/admin/run-benchmarks"
    missing = await client.post(path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert (await client.post(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await client.post(path, headers={"X-API-Key": ADMIN_KEY[:-1]})).status_code == 401
    assert (await client.post(path, headers={"Authorization": f"Basic {ADMIN_KEY}"})).status_code == 401
    # A valid key (either header, either configured key) gets through to the benchmark service (down here).
    for headers in ({"Authorization": f"Bearer {ADMIN_KEY}"}, {"X-API-Key": "second-key"}):
        resp = await client.post(path, headers=headers, json={"categories": ["math"], "max_items_per_suite": 2})
        assert (resp.status_code, error_of(resp)["service"]) == (503, "benchmark")
    bad = await client.post(path, headers={"X-API-Key": ADMIN_KEY}, json={"categories": ["cooking"]})
    assert bad.status_code == 422
    assert (await client.get("/api/v1/costs")).status_code == 401
    assert (await client.get("/api/v1/admin/benchmark-runs/r1")).status_code == 401


async def test_admin_is_disabled_without_configured_keys() -> None:
    async with running_gateway(gateway_settings(), peers_at()) as (url, _), httpx.AsyncClient(base_url=url) as c:
        resp = await c.post("/api/v1/admin/run-benchmarks", headers={"X-API-Key": ""})
        assert resp.status_code == 403
        assert "GATEWAY_ADMIN_API_KEYS" in str(error_of(resp)["message"])


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 32
    resp = await client.post("/api/v1/emotion", json={"text": "x"}, headers={"X-Request-ID": "trace-7"})
    assert error_of(resp)["request_id"] == "trace-7"


async def test_unknown_route_and_method_use_the_error_shape(client: httpx.AsyncClient) -> None:
    assert error_of(await client.get("/api/v1/nothing"))["code"] == "NOT_FOUND"
    assert error_of(await client.get("/api/v1/chat"))["code"] == "METHOD_NOT_ALLOWED"


async def test_tutor_page_and_docs_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert 'id="messages"' in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # no external assets
    js = await client.get("/static/app.js")
    assert js.status_code == 200 and "/api/v1/chat/stream" in js.text
    assert (await client.get("/static/style.css")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    for path in ("/api/v1/chat", "/api/v1/chat/stream", "/v1/chat/completions", "/api/v1/emotion", "/readyz"):
        assert path in schema["paths"]


async def test_openai_requests_the_gateway_cannot_carry_are_400(client: httpx.AsyncClient) -> None:
    base: dict[str, Any] = {"model": "masterx"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n > 1"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "last message must be a non-empty user message"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "only text content",
        ),
        ({"messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "y"}]}, "not supported"),
        ({"messages": []}, "messages"),
    ]
    for extra, message in cases:
        resp = await client.post("/v1/chat/completions", json=base | extra)
        assert resp.status_code in (400, 422), extra
        assert message in str(error_of(resp)["message"]), (extra, resp.text)


async def test_openai_client_sees_the_service_error(client: httpx.AsyncClient) -> None:
    oai = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        await oai.chat.completions.create(model="masterx", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503
    assert "router service unavailable" in caught.value.message
    await oai.close()


# --- rate limit (real Redis) ---------------------------------------------------------------


async def test_rate_limit_per_client_with_retry_after(redis_url: str, redis_prefix: str) -> None:
    settings = gateway_settings(rate_limit_per_minute=3, trusted_proxies=("127.0.0.1",))
    redis = RedisSettings(url=redis_url, key_prefix=redis_prefix)
    async with running_gateway(settings, peers_at(), redis) as (url, _), httpx.AsyncClient(base_url=url) as c:
        alice = {"X-Forwarded-For": "10.0.0.1"}
        statuses = [(await c.get("/api/v1/provider-health", headers=alice)).status_code for _ in range(3)]
        assert statuses == [503, 503, 503]  # allowed through (the router is down)
        limited = await c.get("/api/v1/provider-health", headers=alice)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 20
        assert limited.headers["x-ratelimit-remaining"] == "0"
        assert "rate limit of 3 requests per minute" in str(error_of(limited)["message"])
        # Another client has its own bucket; health and the page are never limited.
        assert (await c.get("/api/v1/provider-health", headers={"X-Forwarded-For": "10.0.0.2"})).status_code == 503
        assert (await c.get("/healthz", headers=alice)).status_code == 200
        assert (await c.get("/", headers=alice)).status_code == 200


async def test_rate_limit_redis_down_fails_open_or_closed() -> None:
    dead = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout_seconds=0.2)
    open_cfg = gateway_settings(rate_limit_per_minute=1)
    async with running_gateway(open_cfg, peers_at(), dead) as (url, _), httpx.AsyncClient(base_url=url) as c:
        for _ in range(3):  # over the limit, but the limiter cannot be asked: let through
            assert (await c.get("/api/v1/provider-health")).status_code == 503
            assert error_of(await c.get("/api/v1/provider-health"))["service"] == "router"
        ready = await c.get("/readyz")
        assert ready.json()["dependencies"]["redis"] == "UNREACHABLE"
    closed_cfg = gateway_settings(rate_limit_per_minute=1, rate_limit_fail_open=False)
    async with running_gateway(closed_cfg, peers_at(), dead) as (url, _), httpx.AsyncClient(base_url=url) as c:
        resp = await c.get("/api/v1/provider-health")
        assert resp.status_code == 503
        assert error_of(resp)["dependency"] == "redis"


async def test_cors_only_for_configured_origins() -> None:
    settings = gateway_settings(cors_origins=("https://tutor.example",))
    async with running_gateway(settings, peers_at()) as (url, _), httpx.AsyncClient(base_url=url) as c:
        preflight = await c.options(
            "/api/v1/chat",
            headers={"Origin": "https://tutor.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://tutor.example"
        other = await c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
