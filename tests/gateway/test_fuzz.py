"""Fuzzed input over HTTP (gateway) and gRPC (a real service): every bad value is a 4xx or
INVALID_ARGUMENT naming the field, and nothing dies.

The gateway runs on real uvicorn in front of the real reasoning service (real MongoDB-wire
server); emotion, router and benchmark are down, so anything that got past validation would
answer 503, not 4xx. Raw JSON bodies carry the tokens Python's JSON accepts (NaN, Infinity).
"""

# ruff: noqa: UP031  (%-formatting keeps the raw JSON bodies readable: no brace escaping)
from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from masterx.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.errors import error_detail_from
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.grpc_server import serving
from services.reasoning.app import ReasoningApp
from services.reasoning.config import ReasoningSettings
from tests.gateway.harness import gateway_settings, peers_at, running_gateway

ADMIN = {"X-API-Key": "fuzz-admin-key-0123456789"}
BIG = 2**63
HUGE = 2**64 + 5

#: (method, path, raw JSON body or None, field the error must name). Bodies are raw text so
#: NaN/Infinity/1e400 reach the server exactly as a hostile client sends them.
HTTP_CASES: list[tuple[str, str, str | None, str]] = [
    ("POST", "/api/v1/chat", '{"message": "hi", "max_tokens": %d}' % BIG, "max_tokens"),
    ("POST", "/api/v1/chat", '{"message": "hi", "temperature": NaN}', "temperature"),
    ("POST", "/api/v1/chat", '{"message": "hi", "cost_quality": Infinity}', "cost_quality"),
    ("POST", "/api/v1/chat", '{"message": "hi", "context": {"engagement": NaN}}', "context.engagement"),
    ("POST", "/api/v1/chat", '{"message": "hi", "context": {"time_on_task_seconds": 1e400}}', "context"),
    ("POST", "/api/v1/chat", '{"message": "hi", "user_id": "no spaces allowed"}', "user_id"),
    ("POST", "/api/v1/chat", '{"message": "hi", "user_id": "%s"}' % ("u" * 129), "user_id"),
    ("POST", "/api/v1/chat", '{"message": "%s"}' % ("m" * 20000), "message"),
    ("POST", "/api/v1/chat", "null", "body"),
    ("POST", "/api/v1/chat/stream", '{"message": "hi", "max_tokens": -1}', "max_tokens"),
    ("POST", "/api/v1/chat/stream", '{"message": "hi", "user_id": "../../etc"}', "user_id"),
    ("POST", "/api/v1/chat/stream", "null", "body"),
    ("POST", "/api/v1/emotion", '{"text": "hi", "user_id": "semi;colon"}', "user_id"),
    ("POST", "/api/v1/emotion", "null", "body"),
    ("POST", "/api/v1/outcomes", '{"turn_id": "t1", "user_id": "a b", "helped": true}', "user_id"),
    ("GET", "/api/v1/students/a%20b/trajectory", None, "user_id"),
    ("GET", "/api/v1/students/s1/trajectory?limit=" + str(BIG), None, "limit"),
    ("GET", "/api/v1/benchmarks?max_age_seconds=1e30", None, "max_age_seconds"),
    ("GET", "/api/v1/benchmarks?category=math&max_age_seconds=" + str(BIG), None, "max_age_seconds"),
    ("POST", "/api/v1/practice/plan", '{"student_id": "s1", "seed": %d}' % HUGE, "seed"),
    ("POST", "/api/v1/practice/plan", '{"student_id": "s1", "slots": -1}', "slots"),
    ("POST", "/api/v1/practice/plan", '{"student_id": "s 1"}', "student_id"),
    ("POST", "/api/v1/practice/plan", "null", "body"),
    ("POST", "/api/v1/practice/problem", '{"student_id": "s1", "seed": -%d}' % HUGE, "seed"),
    ("POST", "/api/v1/practice/problem", '{"student_id": "s1", "bounds": {"min": NaN}}', "bounds.min"),
    ("POST", "/api/v1/practice/problem", '{"student_id": "s1", "bounds": {"max": 1e30}}', "bounds.max"),
    ("POST", "/api/v1/practice/problem", '{"allowed_skills": ["%s"]}' % ("k" * 300), "allowed_skills.0"),
    (
        "PUT",
        "/api/v1/practice/students/s1/mastery",
        '{"skills": [{"skill": "a", "level": "mastered", "last_practiced_at": 1e400}]}',
        "skills.0.last_practiced_at",
    ),
    ("PUT", "/api/v1/practice/students/s1/mastery", "null", "body"),
    ("GET", "/api/v1/practice/students/%s/mastery" % ("z" * 200), None, "student_id"),
    ("POST", "/v1/chat/completions", '{"model": "masterx", "max_tokens": %d, "messages": []}' % BIG, "messages"),
    (
        "POST",
        "/v1/chat/completions",
        '{"model": "masterx", "max_tokens": %d, "messages": [{"role": "user", "content": "x"}]}' % BIG,
        "max_tokens",
    ),
    (
        "POST",
        "/v1/chat/completions",
        '{"model": "masterx", "temperature": NaN, "messages": [{"role": "user", "content": "x"}]}',
        "temperature",
    ),
    (
        "POST",
        "/v1/chat/completions",
        '{"model": "masterx", "user": "bad id", "messages": [{"role": "user", "content": "x"}]}',
        "user",
    ),
    ("POST", "/v1/chat/completions", "null", "body"),
    ("POST", "/api/v1/admin/run-benchmarks", "null", "body"),
    ("POST", "/api/v1/admin/run-benchmarks", "", "body"),
    ("POST", "/api/v1/admin/run-benchmarks", '{"max_items_per_suite": %d}' % (2**31), "max_items_per_suite"),
    ("POST", "/api/v1/admin/run-benchmarks", '{"providers": ["%s"]}' % ("p" * 100), "providers.0"),
    ("GET", "/api/v1/admin/benchmark-runs/r1/items?provider=" + "p" * 100, None, "provider"),
    ("GET", "/api/v1/costs?user_id=" + "u" * 200, None, "user_id"),
]


@pytest.fixture
async def stack(mongo_url: str, mongo_db_name: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    app = ReasoningApp(
        ReasoningSettings(), mongo=MongoSettings(url=mongo_url, database=mongo_db_name), peers=peers_at()
    )
    async with serving(app) as (server, _):
        addr = f"127.0.0.1:{server.port}"
        settings = gateway_settings(admin_api_keys=(ADMIN["X-API-Key"],))
        async with (
            running_gateway(settings, peers_at(reasoning=addr)) as (url, _),
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            yield client, addr


async def test_fuzzed_http_input_is_a_4xx_naming_the_field(stack: tuple[httpx.AsyncClient, str]) -> None:
    client, _ = stack
    failures = []
    for method, path, body, field in HTTP_CASES:
        headers = {"content-type": "application/json", **(ADMIN if "/admin/" in path or "/costs" in path else {})}
        resp = await client.request(method, path, content=body.encode() if body is not None else None, headers=headers)
        err = (
            resp.json().get("error", {}) if resp.headers.get("content-type", "").startswith("application/json") else {}
        )
        named = field in str(err.get("field", "")) or field in str(err.get("message", ""))
        if not (400 <= resp.status_code < 500 and resp.status_code != 404 and named):
            failures.append(f"{method} {path[:70]} {(body or '')[:60]!r}: {resp.status_code} {resp.text[:200]}")
    assert not failures, "\n".join(failures)
    # nothing died: the gateway and the service behind it still answer
    assert (await client.get("/healthz")).status_code == 200
    ok = await client.post("/api/v1/practice/plan", json={"student_id": "s1", "slots": 2, "seed": 1})
    assert ok.status_code == 200, ok.text


GRPC_CASES: list[tuple[str, Any, str]] = [
    ("AllocateBudget", reasoning_pb2.AllocateBudgetRequest(query="q" * 1_000_000), "query"),
    ("AllocateBudget", reasoning_pb2.AllocateBudgetRequest(query="hi", max_output_tokens=-5), "max_output_tokens"),
    ("PlanPracticeSession", reasoning_pb2.PlanPracticeSessionRequest(student_id="bad id"), "student_id"),
    ("PlanPracticeSession", reasoning_pb2.PlanPracticeSessionRequest(student_id="s" * 129), "student_id"),
    (
        "GenerateProblem",
        reasoning_pb2.GenerateProblemRequest(student_id="s1", bounds=reasoning_pb2.ComplexityBounds(min=math.nan)),
        "bounds.min",
    ),
    (
        "GenerateProblem",
        reasoning_pb2.GenerateProblemRequest(student_id="s1", bounds=reasoning_pb2.ComplexityBounds(max=1e30)),
        "bounds.max",
    ),
    (
        "Reason",
        reasoning_pb2.ReasonRequest(query="2+2?", limits=reasoning_pb2.SearchLimits(max_cost_usd=math.inf)),
        "limits.max_cost_usd",
    ),
    (
        "Reason",
        reasoning_pb2.ReasonRequest(query="2+2?", limits=reasoning_pb2.SearchLimits(exploration_weight=math.nan)),
        "limits.exploration_weight",
    ),
]


async def test_fuzzed_grpc_input_is_invalid_argument_naming_the_field(stack: tuple[httpx.AsyncClient, str]) -> None:
    _, addr = stack
    async with channel(addr) as chan:
        stub = reasoning_pb2_grpc.ReasoningServiceStub(chan)
        for method, request, field in GRPC_CASES:
            started = time.perf_counter()
            call = getattr(stub, method)(request, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                if method == "Reason":
                    async for _ in call:
                        pass
                else:
                    await call
            err = caught.value
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, field, err.details())
            detail = error_detail_from(err)
            assert detail is not None and detail.field == field, (method, field, detail)
            assert time.perf_counter() - started < 2.0, (method, "rejected slowly")
        # still serving
        resp = await stub.PlanPracticeSession(reasoning_pb2.PlanPracticeSessionRequest(student_id="s1", slots=2))
        assert len(resp.slots) == 2
