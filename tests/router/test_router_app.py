"""The router service end to end: real gRPC, real Redis and MongoDB, providers over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2
from masterx_runtime.errors import Unavailable, error_detail_from
from masterx_runtime.testing.fake_llm import FakeLLMServer, ReplyRule
from masterx_runtime.testing.grpc_server import serving
from masterx_runtime.testing.servers import free_port
from services.router.app import RouterApp
from tests.router.conftest import RouterFactory, ask, expect_error


def two_providers(fake: FakeLLMServer, **extra_b: Any) -> list[dict[str, Any]]:
    """'smart': strong at coding, pricey. 'thrifty': strong at math, cheap, speaks Anthropic."""
    return [
        fake.provider_entry(
            "smart",
            input_price_per_mtok=3.0,
            output_price_per_mtok=15.0,
            quality={"coding": 90, "math": 50, "empathy": 60, "default": 60},
        ),
        fake.provider_entry(
            "thrifty",
            kind="anthropic",
            input_price_per_mtok=0.1,
            output_price_per_mtok=0.4,
            quality={"coding": 55, "math": 90, "empathy": 85, "default": 60},
            **extra_b,
        ),
    ]


async def test_generate_answers_with_decision_usage_and_cost(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    fake.configure("smart", rules=[ReplyRule(match="reverse", reply="Use slicing: items[::-1].")])
    async with make_router(two_providers(fake)) as (_app, stub):
        resp = await stub.Generate(ask("How do I reverse a list in Python?", cost_quality=1.0), timeout=10)
    assert resp.text == "Use slicing: items[::-1]."
    assert resp.provider == "smart" and resp.model == "smart-model"
    d = resp.decision
    assert d.category == common_pb2.CATEGORY_CODING and d.category_confidence > 0.5
    assert [c.provider for c in d.candidates] == ["smart", "thrifty"]
    assert all(c.score_source == "config" and c.reason for c in d.candidates)
    assert d.category_source == "classifier" and any("category coding" in r and "classifier" in r for r in d.reasons)
    tokens = resp.usage.tokens
    assert (tokens.input_tokens, tokens.output_tokens, tokens.estimated) == (9, 3, False)
    assert resp.usage.cost_usd == pytest.approx((9 * 3.0 + 3 * 15.0) / 1e6)
    assert [a.outcome for a in resp.attempts] == ["ok"]
    assert resp.finish_reason == "stop"


async def test_continuity_while_topic_holds_and_reroute_on_topic_change(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    async with make_router(two_providers(fake)) as (_app, stub):
        first = await stub.Generate(
            ask("Why does my Python for loop never stop?", session_id="s1", cost_quality=1.0), timeout=10
        )
        assert first.provider == "smart" and not first.decision.continuity
        # cost_quality=0 would pick the cheap provider, but the coding topic holds: stay with 'smart'.
        route = await stub.Route(
            ask("How do I fix the IndexError in my Python list loop?", session_id="s1", cost_quality=0.0), timeout=10
        )
        assert route.candidates[0].provider == "smart"
        assert route.continuity and not route.topic_changed
        second = await stub.Generate(
            ask("How do I fix the IndexError in my Python list loop?", session_id="s1", cost_quality=0.0), timeout=10
        )
        assert second.provider == "smart" and second.decision.continuity
        assert second.decision.candidates[0].reason.startswith("continuity")
        third = await stub.Generate(ask("Solve for x: 3x - 7 = 2x + 4.", session_id="s1", cost_quality=1.0), timeout=10)
        assert third.decision.topic_changed and not third.decision.continuity
        assert third.decision.category == common_pb2.CATEGORY_MATH
        assert third.provider == "thrifty"
        session = await stub.GetSession(router_pb2.GetSessionRequest(session_id="s1"), timeout=5)
    assert session.provider == "thrifty" and session.turns == 3
    assert list(session.provider_history) == ["smart", "thrifty"]
    assert list(session.topic_history) == [common_pb2.CATEGORY_CODING, common_pb2.CATEGORY_MATH]
    assert 0 < session.ttl_seconds <= 3600


async def test_vague_follow_up_keeps_the_topic(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    async with make_router(two_providers(fake)) as (_app, stub):
        await stub.Generate(ask("How do I write a recursive function in Java?", session_id="s2"), timeout=10)
        d = await stub.Route(ask("ok, and then what?", session_id="s2"), timeout=10)
    assert not d.topic_changed and d.category == common_pb2.CATEGORY_CODING and d.continuity


async def test_frustrated_student_goes_to_the_empathy_ranking(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    async with make_router(two_providers(fake)) as (_app, stub):
        calm = await stub.Route(ask("How do I reverse a string in Java?", cost_quality=1.0), timeout=10)
        emotion = common_pb2.EmotionResult(
            primary_emotion="annoyance", confidence=0.4, learning_state=common_pb2.LEARNING_STATE_FRUSTRATED
        )
        upset = await stub.Route(
            ask("How do I reverse a string in Java?", cost_quality=1.0, emotion=emotion), timeout=10
        )
        sad = common_pb2.EmotionResult(
            primary_emotion="sadness",
            confidence=0.8,
            learning_state=common_pb2.LEARNING_STATE_NEUTRAL,
            scores=[common_pb2.EmotionScore(label="sadness", probability=0.8, active=True)],
        )
        grief = await stub.Route(ask("How do I reverse a string in Java?", cost_quality=1.0, emotion=sad), timeout=10)
        fine = common_pb2.EmotionResult(
            primary_emotion="joy", confidence=0.9, learning_state=common_pb2.LEARNING_STATE_ENGAGED
        )
        happy = await stub.Route(ask("How do I reverse a string in Java?", cost_quality=1.0, emotion=fine), timeout=10)
    assert calm.provider == "smart" and not calm.empathy_override
    assert upset.empathy_override and upset.provider == "thrifty"  # best empathy quality
    assert any("learning state frustrated" in r for r in upset.reasons)
    assert grief.empathy_override and any("sadness" in r for r in grief.reasons)
    assert not happy.empathy_override and happy.provider == "smart"


@pytest.mark.parametrize("failure", ["http_500", "hang", "break_stream"])
async def test_fallback_hides_a_failing_provider(fake: FakeLLMServer, make_router: RouterFactory, failure: str) -> None:
    fake.configure("smart", error=failure, break_after_chunks=1)
    fake.configure("thrifty", default_reply="backup answer")
    providers = two_providers(fake)
    providers[0]["timeout_seconds"] = 0.3
    async with make_router(providers, ROUTER_BREAKER_MIN_CALLS="100") as (_app, stub):
        results = await asyncio.gather(
            *(
                stub.Generate(ask(f"Why does my Python loop {i} crash?", cost_quality=1.0), timeout=10)
                for i in range(12)
            )
        )
    assert all(r.text == "backup answer" and r.provider == "thrifty" for r in results)  # 0 failed client requests
    expected = {"http_500": "server_error", "hang": "timeout", "break_stream": "server_error"}[failure]
    for r in results:
        assert [(a.provider, a.outcome) for a in r.attempts] == [("smart", expected), ("thrifty", "ok")]
    assert fake.stats("smart")["requests"] == 12


@pytest.mark.parametrize(
    ("failure", "outcome"), [("break_stream", "stream_broken"), ("hang", "timeout"), ("http_429", "rate_limited")]
)
async def test_stream_falls_back_before_the_first_token(
    fake: FakeLLMServer, make_router: RouterFactory, failure: str, outcome: str
) -> None:
    fake.configure("smart", error=failure, break_after_chunks=0)
    fake.configure("thrifty", default_reply="streamed backup answer", tokens_per_second=500)
    async with make_router(two_providers(fake), ROUTER_FIRST_TOKEN_TIMEOUT_SECONDS="0.3") as (_app, stub):
        for _ in range(3):
            chunks = [
                c async for c in stub.GenerateStream(ask("Fix my Java code please", cost_quality=1.0), timeout=10)
            ]
            assert chunks[0].WhichOneof("kind") == "decision" and chunks[0].decision.provider == "smart"
            assert chunks[-1].WhichOneof("kind") == "done"
            text = "".join(c.delta for c in chunks if c.WhichOneof("kind") == "delta")
            assert text == "streamed backup answer" == chunks[-1].done.text
            done = chunks[-1].done
            assert done.provider == "thrifty"
            assert [(a.provider, a.outcome) for a in done.attempts] == [("smart", outcome), ("thrifty", "ok")]
            assert done.usage.tokens.output_tokens == 3 and done.ttft_ms > 0


async def test_stream_broken_after_text_reached_the_client_is_unavailable(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    fake.configure("smart", error="break_stream", break_after_chunks=2, default_reply="one two three four")
    async with make_router(two_providers(fake)) as (_app, stub):
        received: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for chunk in stub.GenerateStream(ask("Fix my Java code please", cost_quality=1.0), timeout=10):
                if chunk.WhichOneof("kind") == "delta":
                    received.append(chunk.delta)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no fallback once text reached the client" in (info.value.details() or "")
    assert "".join(received) == "one two"
    assert fake.stats("thrifty")["requests"] == 0


async def test_breaker_opens_and_recovers_through_the_service(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    clock = FakeClock()
    fake.configure("smart", error="http_500")
    env = {
        "ROUTER_BREAKER_MIN_CALLS": "3",
        "ROUTER_BREAKER_WINDOW_SIZE": "5",
        "ROUTER_BREAKER_OPEN_SECONDS": "30",
        "ROUTER_BREAKER_HALF_OPEN_CALLS": "1",
    }
    async with make_router(two_providers(fake), clock=clock, **env) as (_app, stub):
        for _ in range(3):
            r = await stub.Generate(ask("Why does my Python code crash?", cost_quality=1.0), timeout=10)
            assert r.provider == "thrifty"
        listed = {p.name: p for p in (await stub.ListProviders(router_pb2.ListProvidersRequest(), timeout=5)).providers}
        assert listed["smart"].breaker_state == "open" and listed["smart"].consecutive_trips == 1
        assert listed["smart"].open_until == pytest.approx(clock.t + 30)
        before = fake.stats("smart")["requests"]
        r = await stub.Generate(ask("Why does my Python code crash?", cost_quality=1.0), timeout=10)
        assert r.provider == "thrifty" and [a.provider for a in r.attempts] == ["thrifty"]  # not even tried
        assert r.decision.candidates[-1].provider == "smart" and r.decision.candidates[-1].excluded
        assert fake.stats("smart")["requests"] == before
        fake.configure("smart", default_reply="recovered")
        clock.t += 30
        r = await stub.Generate(ask("Why does my Python code crash?", cost_quality=1.0), timeout=10)
        assert r.text == "recovered", (
            list(r.decision.candidates),
            list(r.decision.reasons),
        )  # the half-open trial succeeded
        listed = {p.name: p for p in (await stub.ListProviders(router_pb2.ListProvidersRequest(), timeout=5)).providers}
        assert listed["smart"].breaker_state == "closed" and listed["smart"].consecutive_trips == 0


async def test_breaker_state_is_shared_between_two_router_replicas(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    fake.configure("smart", error="http_500")
    env = {"ROUTER_BREAKER_MIN_CALLS": "3", "ROUTER_BREAKER_OPEN_SECONDS": "60"}
    async with (
        make_router(two_providers(fake), **env) as (_a, stub_a),
        make_router(two_providers(fake), **env) as (_b, stub_b),
    ):
        for _ in range(3):
            await stub_a.Generate(ask("Why does my Python code crash?", cost_quality=1.0), timeout=10)
        for _ in range(100):
            listed = {p.name: p for p in (await stub_b.ListProviders(router_pb2.ListProvidersRequest())).providers}
            if listed["smart"].breaker_state == "open":
                break
            await asyncio.sleep(0.02)
        assert listed["smart"].breaker_state == "open"
        before = fake.stats("smart")["requests"]
        r = await stub_b.Generate(ask("Why does my Python code crash?", cost_quality=1.0), timeout=10)
        assert r.provider == "thrifty" and fake.stats("smart")["requests"] == before


async def test_pinned_provider_never_falls_back(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    fake.configure("smart", error="http_500")
    async with make_router(two_providers(fake), ROUTER_RETRIES_PER_PROVIDER="2") as (_app, stub):
        ok = await stub.Generate(ask("hello", pinned_provider="thrifty", cost_quality=1.0), timeout=10)
        assert ok.provider == "thrifty" and [c.provider for c in ok.decision.candidates] == ["thrifty"]
        err = await expect_error(
            stub.Generate(ask("hello", pinned_provider="smart"), timeout=10), grpc.StatusCode.UNAVAILABLE
        )
    assert "smart (server_error" in (err.details() or "")
    assert fake.stats("smart")["requests"] == 3  # the pinned provider was retried (no one else to go to)...
    assert fake.stats("thrifty")["requests"] == 1  # ...and never replaced


async def test_bad_input_is_rejected_with_clear_codes(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    async with make_router(two_providers(fake)) as (_app, stub):
        cases = [
            (router_pb2.GenerateRequest(), "NO_MESSAGES"),
            (ask("   "), "EMPTY_MESSAGE"),
            (ask("hi", history=[("wizard", "x")]), "BAD_ROLE"),
            (ask("hi", cost_quality=1.5), "BAD_COST_QUALITY"),
            (ask("hi", max_tokens=-1), "BAD_MAX_TOKENS"),
            (
                router_pb2.GenerateRequest(messages=[common_pb2.ChatMessage(role="assistant", content="hi")]),
                "LAST_NOT_USER",
            ),
        ]
        for request, reason in cases:
            for call in (stub.Generate(request, timeout=5), stub.Route(request, timeout=5)):
                err = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT)
                detail = error_detail_from(err)
                assert detail is not None and detail.reason == reason and detail.service == "router"
        err = await expect_error(stub.Generate(ask("hi", pinned_provider="nope"), timeout=5), grpc.StatusCode.NOT_FOUND)
        assert "nope" in (err.details() or "") and "smart" in (err.details() or "")
        await expect_error(
            stub.GetSession(router_pb2.GetSessionRequest(session_id="never"), timeout=5), grpc.StatusCode.NOT_FOUND
        )
        await expect_error(stub.GetSession(router_pb2.GetSessionRequest(), timeout=5), grpc.StatusCode.INVALID_ARGUMENT)
        await expect_error(
            stub.GetCosts(router_pb2.GetCostsRequest(since_day="yesterday"), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    assert fake.stats("smart")["requests"] == fake.stats("thrifty")["requests"] == 0


async def test_user_and_provider_budgets(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    providers = two_providers(fake)
    providers[0]["daily_budget_usd"] = 0.00001  # one answer from 'smart' spends it
    # 'smart' answers "Fix my Python loop" for (4 * 3 + 6 * 15) / 1e6 = $0.000102; alice may spend $0.00012.
    async with make_router(providers, ROUTER_USER_DAILY_BUDGET_USD="0.00012") as (_app, stub):
        first = await stub.Generate(ask("Fix my Python loop", user_id="alice", cost_quality=1.0), timeout=10)
        assert first.provider == "smart"
        second = await stub.Generate(ask("Fix my Python loop", user_id="bob", cost_quality=1.0), timeout=10)
        assert second.provider == "thrifty"
        assert "budget" in second.decision.candidates[-1].reason and second.decision.candidates[-1].excluded
        await expect_error(
            stub.Generate(ask("Fix my Python loop", user_id="bob", pinned_provider="smart"), timeout=10),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        for _ in range(10):  # alice spends the rest on the cheap provider (~$0.00001 a request)
            try:
                await stub.Generate(ask("Fix my Python loop " * 20, user_id="alice"), timeout=10)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert error_detail_from(err).reason == "BUDGET_EXCEEDED"  # type: ignore[union-attr]
                break
        else:
            pytest.fail("alice's budget was never enforced")


async def test_cost_ledger_totals_match_reported_usage(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    fake.configure("thrifty", default_reply="a short answer of seven words here")
    async with make_router(two_providers(fake)) as (_app, stub):
        responses = []
        for user, provider, text in [
            ("ann", "smart", "Fix my code"),
            ("ann", "thrifty", "What is 2 + 2 and why?"),
            ("ben", "thrifty", "Explain fractions please"),
            ("ben", "thrifty", "Explain decimals too"),
        ]:
            responses.append(await stub.Generate(ask(text, user_id=user, pinned_provider=provider), timeout=10))
        chunks = [
            c async for c in stub.GenerateStream(ask("One more", user_id="ben", pinned_provider="smart"), timeout=10)
        ]
        responses.append(chunks[-1].done)
        costs = await stub.GetCosts(router_pb2.GetCostsRequest(), timeout=5)
        ben = await stub.GetCosts(router_pb2.GetCostsRequest(user_id="ben"), timeout=5)
        thrifty = await stub.GetCosts(router_pb2.GetCostsRequest(provider="thrifty"), timeout=5)
        empty = await stub.GetCosts(
            router_pb2.GetCostsRequest(since_day="2001-01-01", until_day="2001-01-31"), timeout=5
        )
    assert costs.total_requests == 5
    assert costs.total_tokens == sum(r.usage.tokens.total_tokens for r in responses)
    assert costs.total_cost_usd == pytest.approx(sum(r.usage.cost_usd for r in responses))
    assert [(r.user_id, r.provider, r.requests) for r in costs.rows] == [
        ("ann", "smart", 1),
        ("ann", "thrifty", 1),
        ("ben", "smart", 1),
        ("ben", "thrifty", 2),
    ]
    assert ben.total_requests == 3 and thrifty.total_requests == 3
    ben_thrifty = next(r for r in ben.rows if r.provider == "thrifty")
    assert ben_thrifty.output_tokens == 14  # 7 + 7, as the provider reported
    assert ben_thrifty.cost_usd == pytest.approx((ben_thrifty.input_tokens * 0.1 + 14 * 0.4) / 1e6)
    assert empty.total_requests == 0 and not empty.rows


async def test_deadline_is_respected_end_to_end(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    fake.configure("smart", error="hang")
    fake.configure("thrifty", error="hang")
    async with make_router(two_providers(fake)) as (_app, stub):
        started = time.monotonic()
        await expect_error(stub.Generate(ask("Fix my code"), timeout=0.6), grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 2.0
        await asyncio.sleep(0.2)
    assert fake.stats("smart")["in_flight"] == 0  # the abandoned provider call was cancelled, not leaked


async def test_router_deadline_setting_bounds_calls_without_a_deadline(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    fake.configure("smart", error="hang")
    fake.configure("thrifty", error="hang")
    async with make_router(two_providers(fake), ROUTER_REQUEST_TIMEOUT_SECONDS="0.5") as (_app, stub):
        started = time.monotonic()
        err = await expect_error(stub.Generate(ask("Fix my code")), grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 2.0
    assert "(timeout" in (err.details() or "")


async def test_rate_limited_provider_is_skipped(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    providers = two_providers(fake)
    providers[0]["rpm"] = 2
    async with make_router(providers) as (_app, stub):
        answered = [
            (await stub.Generate(ask("Fix my Python loop", cost_quality=1.0), timeout=10)).provider for _ in range(4)
        ]
    assert answered[:2] == ["smart", "smart"] and answered[2:] == ["thrifty", "thrifty"]
    assert fake.stats("smart")["requests"] == 2


async def test_scores_come_from_the_benchmark_service(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc

    class Bench(benchmark_pb2_grpc.BenchmarkServiceServicer):
        async def GetScores(self, request: object, context: object) -> benchmark_pb2.GetScoresResponse:
            board = benchmark_pb2.Leaderboard(
                category=common_pb2.CATEGORY_CODING,
                scores=[
                    benchmark_pb2.ProviderScore(provider="thrifty", quality=97, speed=80, cost=90, run_id="run-7"),
                    benchmark_pb2.ProviderScore(provider="smart", quality=20, speed=20, cost=10, run_id="run-7"),
                ],
            )
            return benchmark_pb2.GetScoresResponse(leaderboards=[board])

        async def ListSuites(self, request: object, context: object) -> benchmark_pb2.ListSuitesResponse:
            suite = benchmark_pb2.Suite(
                category=common_pb2.CATEGORY_CODING, version="9", quality_weight=0.7, speed_weight=0.2, cost_weight=0.1
            )
            return benchmark_pb2.ListSuitesResponse(suites=[suite])

    server = grpc.aio.server()
    benchmark_pb2_grpc.add_BenchmarkServiceServicer_to_server(Bench(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        env = {
            "ROUTER_SCORES_ENABLED": "1",
            "BENCHMARK_ADDR": f"127.0.0.1:{port}",
            "ROUTER_SCORES_REFRESH_SECONDS": "0.1",
        }
        async with make_router(two_providers(fake), **env) as (app, stub):
            for _ in range(100):
                if app.book.last_refresh:
                    break
                await asyncio.sleep(0.02)
            d = await stub.Route(ask("Fix my Python loop", cost_quality=1.0), timeout=5)
            math_d = await stub.Route(ask("Solve 2x + 5 = 17", cost_quality=1.0), timeout=5)
    finally:
        await server.stop(0)
    assert d.provider == "thrifty"
    assert {c.provider: c.score_source for c in d.candidates} == {
        "thrifty": "benchmark:run-7",
        "smart": "benchmark:run-7",
    }
    assert all(c.score_source == "config" for c in math_d.candidates)  # no math scores yet
    assert app.book.weights["coding"].quality == pytest.approx(0.7)
    assert any("benchmark service (suite 9)" in r for r in d.reasons)


async def test_benchmark_service_down_never_blocks_routing(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    env = {"ROUTER_SCORES_ENABLED": "1", "BENCHMARK_ADDR": f"127.0.0.1:{free_port()}"}
    async with make_router(two_providers(fake), **env) as (_app, stub):
        started = time.monotonic()
        r = await stub.Generate(ask("Fix my Python loop"), timeout=5)
        assert time.monotonic() - started < 1.0
    assert r.text and all(c.score_source == "config" for c in r.decision.candidates)


async def test_health_is_serving_only_after_stores_connect(fake: FakeLLMServer, router_env: dict[str, str]) -> None:
    env = {**router_env, "ROUTER_PROVIDERS_JSON": json.dumps(two_providers(fake))}
    app = RouterApp(env)
    async with serving(app) as (_server, chan):
        health = health_pb2_grpc.HealthStub(chan)
        status = await health.Check(health_pb2.HealthCheckRequest(service="masterx.router.v1.RouterService"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        assert app.health_details()["breakers"] == {"smart": "closed", "thrifty": "closed"}
        assert app.health_details()["ledger"]["queued_charges"] == 0
    broken = RouterApp(
        {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_CONNECT_TIMEOUT_SECONDS": "0.5"}
    )
    with pytest.raises(Unavailable, match="redis"):
        await broken.start()  # so GrpcServer never reports SERVING
    await broken.stop()


class FakeClock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t
