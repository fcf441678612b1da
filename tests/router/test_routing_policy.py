"""Routing policy through the service: category from the request or the emotion service,
difficulty-aware ranking, the dry run, leaderboard agreement, escalation across turns (real
Redis sessions), readiness, and stream bounds."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc
from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.interceptors import default_interceptors
from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior
from masterx_runtime.testing.grpc_server import serving
from services.router.app import RouterApp
from services.router.servicer import RouterServicer
from tests.router.conftest import CATS, RouterFactory, ask, expect_error


def strong_and_cheap(fake: FakeLLMServer) -> list[dict[str, Any]]:
    """'strong': high quality everywhere, expensive. 'cheap': decent, nearly free."""
    return [
        fake.provider_entry("strong", input_price_per_mtok=5.0, output_price_per_mtok=15.0, quality={"default": 90}),
        fake.provider_entry("cheap", input_price_per_mtok=0.05, output_price_per_mtok=0.1, quality={"default": 62}),
    ]


def scores(probs: list[float], followup: float = 0.0, **fields: Any) -> common_pb2.EmotionResult:
    return common_pb2.EmotionResult(
        category_scores=[
            common_pb2.CategoryScore(category=c, probability=p) for c, p in zip(CATS, probs, strict=False)
        ],
        followup_probability=followup,
        model_version="heads-test",
        **fields,
    )


MATHY = [0.02, 0.9, 0.02, 0.02, 0.02, 0.02]


async def test_category_scores_from_the_request_win_over_the_classifier(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    async with make_router(strong_and_cheap(fake)) as (_app, stub):
        # the words say coding; the encoder's probabilities (sent with the request) say math
        d = await stub.Route(ask("write a function for this", emotion=scores(MATHY)), timeout=5)
        hinted = await stub.Route(
            ask("write a function", emotion=scores(MATHY), category=common_pb2.CATEGORY_LANGUAGE), timeout=5
        )
    assert d.category == common_pb2.CATEGORY_MATH and d.category_source == "request"
    assert d.category_confidence == pytest.approx(0.9)
    assert hinted.category == common_pb2.CATEGORY_LANGUAGE and hinted.category_source == "hint"


@pytest.mark.parametrize(
    ("emotion", "field"),
    [
        (scores([0.5, 0.3, 0.1, 0.0, 0.0, 0.0]), "emotion.category_scores"),  # sums to 0.9
        (scores([1.2, -0.2, 0, 0, 0, 0]), "emotion.category_scores[0].probability"),
        (scores([math.nan, 1, 0, 0, 0, 0]), "emotion.category_scores[0].probability"),
        (scores(MATHY, followup=1.5), "emotion.followup_probability"),
        (
            common_pb2.EmotionResult(
                category_scores=[
                    common_pb2.CategoryScore(category=common_pb2.CATEGORY_MATH, probability=0.5),
                    common_pb2.CategoryScore(category=common_pb2.CATEGORY_MATH, probability=0.5),
                ]
            ),
            "emotion.category_scores",
        ),
        (
            common_pb2.EmotionResult(
                category_scores=[common_pb2.CategoryScore(category=common_pb2.CATEGORY_UNSPECIFIED, probability=1.0)]
            ),
            "emotion.category_scores[0].category",
        ),
    ],
)
async def test_malformed_category_scores_are_invalid_argument(
    fake: FakeLLMServer, make_router: RouterFactory, emotion: common_pb2.EmotionResult, field: str
) -> None:
    from masterx_runtime.errors import error_detail_from

    async with make_router(strong_and_cheap(fake)) as (_app, stub):
        err = await expect_error(stub.Route(ask("hello", emotion=emotion), timeout=5), grpc.StatusCode.INVALID_ARGUMENT)
        await expect_error(stub.Generate(ask("hello", emotion=emotion), timeout=5), grpc.StatusCode.INVALID_ARGUMENT)
    detail = error_detail_from(err)
    assert detail is not None and detail.field == field, err.details()
    assert fake.stats("strong")["requests"] == 0 == fake.stats("cheap")["requests"]


class Emotion(emotion_pb2_grpc.EmotionServiceServicer):  # type: ignore[misc]
    def __init__(self, probs: list[float] | None) -> None:
        self.probs = probs
        self.requests: list[emotion_pb2.AnalyzeRequest] = []

    async def Analyze(self, request: emotion_pb2.AnalyzeRequest, context: object) -> emotion_pb2.AnalyzeResponse:
        self.requests.append(request)
        result = scores(self.probs) if self.probs else common_pb2.EmotionResult(primary_emotion="neutral")
        return emotion_pb2.AnalyzeResponse(result=result)


async def _serve(servicer: Emotion) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    emotion_pb2_grpc.add_EmotionServiceServicer_to_server(servicer, server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_direct_call_asks_the_emotion_service_else_the_classifier(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    emotion = Emotion(MATHY)  # type: ignore[abstract]
    server, port = await _serve(emotion)
    try:
        async with make_router(strong_and_cheap(fake), ROUTER_CATEGORY_EMOTION_ADDR=f"127.0.0.1:{port}") as (_a, stub):
            d = await stub.Route(ask("How do I reverse a list in Python?", user_id="u9"), timeout=5)
            # an emotion result without category scores: the encoder already ran; no second call
            old_model = await stub.Route(
                ask("How do I reverse a list in Python?", emotion=common_pb2.EmotionResult(primary_emotion="joy")),
                timeout=5,
            )
            # a pinned request has one candidate whatever the category: no encoder pass for it
            pinned = await stub.Route(ask("How do I reverse a list in Python?", pinned_provider="cheap"), timeout=5)
    finally:
        await server.stop(0)
    assert d.category == common_pb2.CATEGORY_MATH and d.category_source == "emotion_service"
    assert old_model.category_source == "classifier" and old_model.category == common_pb2.CATEGORY_CODING
    assert pinned.category_source == "classifier" and pinned.provider == "cheap"
    assert [r.user_id for r in emotion.requests] == [""]  # nothing written to the student's history
    headless = Emotion(None)  # type: ignore[abstract]  # an emotion model without a category head
    server, port = await _serve(headless)
    try:
        async with make_router(strong_and_cheap(fake), ROUTER_CATEGORY_EMOTION_ADDR=f"127.0.0.1:{port}") as (_a, stub):
            first = await stub.Route(ask("How do I reverse a list in Python?"), timeout=5)
            second = await stub.Route(ask("How do I reverse a list in Python?"), timeout=5)
    finally:
        await server.stop(0)
    assert first.category_source == second.category_source == "classifier"
    assert first.category == common_pb2.CATEGORY_CODING
    assert len(headless.requests) == 1  # not asked again during the retry pause


async def test_dry_run_calls_no_provider_and_reports_the_decision(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    async with make_router(strong_and_cheap(fake)) as (_app, stub):
        d = await stub.Route(ask("Explain recursion", session_id="dry"), timeout=5)
        await expect_error(
            stub.Route(ask("x", budget=common_pb2.TokenBudget(complexity=1.5)), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        await expect_error(stub.Route(router_pb2.GenerateRequest(), timeout=5), grpc.StatusCode.INVALID_ARGUMENT)
        await expect_error(
            stub.GetSession(router_pb2.GetSessionRequest(session_id="dry"), timeout=5), grpc.StatusCode.NOT_FOUND
        )
    assert fake.stats("strong")["requests"] == 0 == fake.stats("cheap")["requests"]
    assert len(d.candidates) == 2 and all(c.score_source and c.reason for c in d.candidates)
    assert d.complexity_source == "estimated" and 0 <= d.complexity <= 1 and 0 <= d.cost_quality_used <= 1


async def test_hard_and_easy_prompts_in_one_category_go_to_different_providers(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    async with make_router(strong_and_cheap(fake)) as (_app, stub):
        hard = await stub.Route(
            ask("Prove the bound", category=common_pb2.CATEGORY_MATH, budget=common_pb2.TokenBudget(complexity=0.95)),
            timeout=5,
        )
        easy = await stub.Route(
            ask("What is 2 + 2?", category=common_pb2.CATEGORY_MATH, budget=common_pb2.TokenBudget(complexity=0.05)),
            timeout=5,
        )
    assert hard.provider == "strong" and easy.provider == "cheap"
    assert hard.complexity == pytest.approx(0.95) and hard.complexity_source == "request"
    assert hard.cost_quality_used > 0.5 > easy.cost_quality_used


class Bench(benchmark_pb2_grpc.BenchmarkServiceServicer):  # type: ignore[misc]
    """Leaderboards with the suites' weights and final scores, as the benchmark service gives them."""

    WEIGHTS = {
        1: (0.5, 0.3, 0.2),
        2: (0.6, 0.2, 0.2),
        3: (0.5, 0.2, 0.3),
        4: (0.5, 0.3, 0.2),
        5: (0.6, 0.3, 0.1),
        6: (0.4, 0.3, 0.3),
    }
    SCORES = {"strong": (88.0, 40.0, 20.0), "cheap": (70.0, 70.0, 95.0), "mid": (80.0, 55.0, 60.0)}

    async def GetScores(self, request: object, context: object) -> benchmark_pb2.GetScoresResponse:
        boards = []
        for cat, (wq, ws, wc) in self.WEIGHTS.items():
            rows = [
                benchmark_pb2.ProviderScore(
                    provider=p,
                    category=cat,  # type: ignore[arg-type]
                    quality=q,
                    speed=s,
                    cost=c,
                    final_score=wq * q + ws * s + wc * c,
                    run_id="r1",
                )
                for p, (q, s, c) in self.SCORES.items()
            ]
            rows.sort(key=lambda r: -r.final_score)
            boards.append(benchmark_pb2.Leaderboard(category=cat, scores=rows))  # type: ignore[arg-type]
        return benchmark_pb2.GetScoresResponse(leaderboards=boards)

    async def ListSuites(self, request: object, context: object) -> benchmark_pb2.ListSuitesResponse:
        return benchmark_pb2.ListSuitesResponse(
            suites=[
                benchmark_pb2.Suite(category=c, version="1", quality_weight=q, speed_weight=s, cost_weight=w)  # type: ignore[arg-type]
                for c, (q, s, w) in self.WEIGHTS.items()
            ]
        )


async def test_router_and_leaderboard_agree_on_the_winner_for_every_category(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    bench = Bench()  # type: ignore[abstract]
    server = grpc.aio.server()
    benchmark_pb2_grpc.add_BenchmarkServiceServicer_to_server(bench, server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    providers = [*strong_and_cheap(fake), fake.provider_entry("mid")]
    env = {"ROUTER_SCORES_ENABLED": "1", "BENCHMARK_ADDR": f"127.0.0.1:{port}", "ROUTER_SCORES_REFRESH_SECONDS": "0.1"}
    try:
        async with make_router(providers, **env) as (app, stub):
            for _ in range(100):
                if app.book.last_refresh:
                    break
                await asyncio.sleep(0.02)
            boards = {b.category: b for b in (await bench.GetScores(None, None)).leaderboards}
            for cat in CATS:
                d = await stub.Route(
                    ask("something", category=cat, budget=common_pb2.TokenBudget(complexity=0.5)), timeout=5
                )
                assert d.provider == boards[cat].scores[0].provider, common_pb2.Category.Name(cat)
                top = {c.provider: c.score for c in d.candidates}
                for row in boards[cat].scores:
                    assert top[row.provider] == pytest.approx(row.final_score, abs=1e-3)
    finally:
        await server.stop(0)


def feeling(state: int, frustrated: float = 0.0, confused: float = 0.0) -> common_pb2.EmotionResult:
    return common_pb2.EmotionResult(
        learning_state=state,  # type: ignore[arg-type]
        learning_state_scores={"frustrated": frustrated, "confused": confused, "engaged": 1 - frustrated - confused},
    )


async def test_escalation_moves_a_worsening_session_up_and_back(
    fake: FakeLLMServer, make_router: RouterFactory
) -> None:
    turn: dict[str, Any] = {"session_id": "esc", "category": common_pb2.CATEGORY_MATH, "cost_quality": 0.2}
    easy = common_pb2.TokenBudget(complexity=0.5)
    async with make_router(strong_and_cheap(fake)) as (_app, stub):
        calm = await stub.Generate(
            ask("What is 3 + 4?", emotion=feeling(common_pb2.LEARNING_STATE_ENGAGED, 0.0, 0.05), budget=easy, **turn),
            timeout=5,
        )
        worse = await stub.Generate(
            ask(
                "I still don't get it",
                emotion=feeling(common_pb2.LEARNING_STATE_CONFUSED, 0.1, 0.8),
                budget=easy,
                **turn,
            ),
            timeout=5,
        )
        still = await stub.Route(
            ask("why", emotion=feeling(common_pb2.LEARNING_STATE_CONFUSED, 0.1, 0.7), budget=easy, **turn), timeout=5
        )
        better = await stub.Generate(
            ask("oh I see now", emotion=feeling(common_pb2.LEARNING_STATE_ENGAGED, 0.0, 0.05), budget=easy, **turn),
            timeout=5,
        )
    assert calm.provider == "cheap" and not calm.decision.escalated
    assert worse.provider == "strong" and worse.decision.escalated
    assert any("escalated: distress rose" in r for r in worse.decision.reasons)
    assert still.provider == "strong" and still.escalated
    assert better.provider == "cheap" and not better.decision.escalated
    assert any("escalation relaxed" in r for r in better.decision.reasons)


async def test_a_fresh_system_with_keys_ranks_by_priors(router_env: dict[str, str]) -> None:
    env = {
        **router_env,
        "ROUTER_DISCOVER_ENV_KEYS": "1",
        "OPENAI_API_KEY": "sk-test-not-used",
        "GROQ_API_KEY": "gsk-test-not-used",
    }
    async with serving(RouterApp(env)) as (_server, chan):
        stub = router_pb2_grpc.RouterServiceStub(chan)
        d = await stub.Route(ask("Write a Python function that merges two sorted lists"), timeout=5)
    sources = {c.provider: c.score_source for c in d.candidates}
    assert sources == {"openai": "prior:gpt-4o-mini", "groq": "prior:llama-3.1-8b"}
    quality = {c.provider: c.quality for c in d.candidates}
    assert quality["openai"] == pytest.approx(87.2) and quality["groq"] == pytest.approx(72.6)  # HumanEval
    assert all("HumanEval" in c.reason and "20" in c.reason for c in d.candidates)  # figure, source, date


async def test_rpcs_before_start_are_unavailable(fake: FakeLLMServer, router_env: dict[str, str]) -> None:
    app = RouterApp({**router_env, "ROUTER_PROVIDERS_JSON": json.dumps(strong_and_cheap(fake))})
    server = grpc.aio.server(interceptors=default_interceptors("router"))
    router_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(app), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = router_pb2_grpc.RouterServiceStub(chan)
            await expect_error(stub.Route(ask("hi"), timeout=5), grpc.StatusCode.UNAVAILABLE)
    finally:
        await server.stop(0)


async def _stream(stub: router_pb2_grpc.RouterServiceStub, **fields: Any) -> AsyncIterator[router_pb2.GenerateChunk]:
    async for chunk in stub.GenerateStream(ask("tell me a long story", **fields), timeout=20):
        yield chunk


async def test_stream_is_bounded_by_idle_time_not_total_length(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    long_reply = " ".join(f"w{i}" for i in range(30))
    fake.configure("slow", ProviderBehavior(ttft_ms=20, tokens_per_second=25, default_reply=long_reply))
    fake.configure("stall", ProviderBehavior(ttft_ms=20, tokens_per_second=2, default_reply=long_reply))
    env = {"ROUTER_ATTEMPT_TIMEOUT_SECONDS": "0.5", "ROUTER_STREAM_IDLE_TIMEOUT_SECONDS": "0.3"}
    providers = [fake.provider_entry("slow"), fake.provider_entry("stall")]
    async with make_router(providers, **env) as (_app, stub):
        chunks = [c async for c in _stream(stub, pinned_provider="slow")]
        done = chunks[-1].done
        assert done.text.split() == long_reply.split() and done.latency_ms > 900  # longer than the attempt timeout
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [c async for c in _stream(stub, pinned_provider="stall")]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "stalled" in (info.value.details() or "")
