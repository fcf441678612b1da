"""analyze_emotion: the router analyses the message itself and starts the provider call early.

A scripted emotion service (a real gRPC server) answers Analyze with chosen category scores
after a chosen delay; providers are the fake LLM over real HTTP, so which provider was called,
and whether a call was cancelled, is read from the provider's own counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx.router.v1 import router_pb2
from masterx_runtime.testing.fake_llm import FakeLLMServer
from masterx_runtime.testing.servers import free_port
from tests.router.conftest import CATS, RouterFactory, ask

CODING = [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]
MATHY = [0.02, 0.9, 0.02, 0.02, 0.02, 0.02]
QUESTION = "How do I reverse a list in Python?"  # the TF-IDF classifier says coding


def result(probs: list[float]) -> common_pb2.EmotionResult:
    return common_pb2.EmotionResult(
        primary_emotion="curiosity",
        confidence=0.7,
        learning_state=common_pb2.LEARNING_STATE_ENGAGED,
        category_scores=[common_pb2.CategoryScore(category=c, probability=p) for c, p in zip(CATS, probs, strict=True)],
        model_version="scripted",
    )


class ScriptedEmotion(emotion_pb2_grpc.EmotionServiceServicer):  # type: ignore[misc]
    def __init__(self, probs: list[float], delay: float = 0.0) -> None:
        self.probs = probs
        self.delay = delay
        self.requests: list[emotion_pb2.AnalyzeRequest] = []

    async def Analyze(self, request: emotion_pb2.AnalyzeRequest, context: object) -> emotion_pb2.AnalyzeResponse:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        return emotion_pb2.AnalyzeResponse(result=result(self.probs))

    async def StreamAnalyze(
        self, requests: AsyncIterator[emotion_pb2.AnalyzeRequest], context: object
    ) -> AsyncIterator[emotion_pb2.AnalyzeResponse]:
        """As the emotion service: messages analysed concurrently, answered in request order."""
        pending: asyncio.Queue[asyncio.Task[emotion_pb2.AnalyzeResponse] | None] = asyncio.Queue()

        async def read() -> None:
            async for request in requests:
                pending.put_nowait(asyncio.create_task(self.Analyze(request, context)))
            pending.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await pending.get()) is not None:
                yield await task
        finally:
            reader.cancel()


@pytest.fixture
async def emotion_server() -> AsyncIterator[tuple[ScriptedEmotion, str]]:
    servicer = ScriptedEmotion(CODING)  # type: ignore[abstract]
    server = grpc.aio.server()
    emotion_pb2_grpc.add_EmotionServiceServicer_to_server(servicer, server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def coder_and_mathematician(fake: FakeLLMServer) -> list[dict[str, Any]]:
    """'coder' wins coding, 'mathematician' wins math (both the same price)."""
    return [
        fake.provider_entry("coder", quality={"coding": 95, "math": 40, "default": 60}),
        fake.provider_entry("mathematician", quality={"coding": 40, "math": 95, "default": 60}),
    ]


async def test_confirmed_early_call_is_the_answer_and_the_analysis_comes_back(
    fake: FakeLLMServer, make_router: RouterFactory, emotion_server: tuple[ScriptedEmotion, str]
) -> None:
    emotion, addr = emotion_server
    fake.configure("coder", default_reply="slicing", ttft_ms=30)
    async with make_router(coder_and_mathematician(fake), EMOTION_ADDR=addr) as (_app, stub):
        resp = await stub.Generate(ask(QUESTION, user_id="u7", session_id="s7", analyze_emotion=True), timeout=10)
    assert resp.text == "slicing" and resp.provider == "coder"
    assert resp.decision.speculation == router_pb2.SPECULATION_CONFIRMED
    assert resp.decision.category_source == "emotion_service"
    assert resp.emotion == result(CODING)  # handed back as the emotion service sent it
    assert fake.stats("coder")["requests"] == 1 and fake.stats("mathematician")["requests"] == 0
    assert [(r.user_id, r.session_id, r.text) for r in emotion.requests] == [("u7", "s7", QUESTION)]
    assert [a.outcome for a in resp.attempts] == ["ok"]


async def test_switched_early_call_is_cancelled_before_its_answer(
    fake: FakeLLMServer, make_router: RouterFactory, emotion_server: tuple[ScriptedEmotion, str]
) -> None:
    emotion, addr = emotion_server
    emotion.probs, emotion.delay = MATHY, 0.05  # the words say coding; the encoder says math
    fake.configure("coder", default_reply="WRONG", ttft_ms=400)
    fake.configure("mathematician", default_reply="x = 11")
    async with make_router(coder_and_mathematician(fake), EMOTION_ADDR=addr) as (_app, stub):
        resp = await stub.Generate(ask(QUESTION, analyze_emotion=True), timeout=10)
        costs = await stub.GetCosts(router_pb2.GetCostsRequest(user_id="u1"), timeout=5)
    assert resp.text == "x = 11" and resp.provider == "mathematician"
    assert resp.decision.speculation == router_pb2.SPECULATION_SWITCHED
    assert resp.decision.category == common_pb2.CATEGORY_MATH
    assert any("early call to coder cancelled" in r for r in resp.decision.reasons)
    assert fake.stats("coder")["requests"] == 1  # it was started ...
    assert [a.provider for a in resp.attempts] == ["mathematician"]  # ... but never answered
    # the cancelled call is booked: its prompt (estimated), no output
    booked = {r.provider: r for r in costs.rows}
    assert booked["coder"].input_tokens > 0 and booked["coder"].output_tokens == 0
    assert booked["mathematician"].output_tokens > 0


async def test_stream_holds_the_early_text_until_the_analysis_confirms(
    fake: FakeLLMServer, make_router: RouterFactory, emotion_server: tuple[ScriptedEmotion, str]
) -> None:
    emotion, addr = emotion_server
    emotion.delay = 0.15  # slower than the provider's first token
    fake.configure("coder", default_reply="use reversed ( )", ttft_ms=5, tokens_per_second=1000)
    async with make_router(coder_and_mathematician(fake), EMOTION_ADDR=addr) as (_app, stub):
        chunks = [c async for c in stub.GenerateStream(ask(QUESTION, analyze_emotion=True), timeout=10)]
    kinds = [c.WhichOneof("kind") for c in chunks]
    assert kinds[0] == "decision" and kinds[-1] == "done" and set(kinds[1:-1]) == {"delta"}
    assert chunks[0].decision.speculation == router_pb2.SPECULATION_CONFIRMED
    assert "".join(c.delta for c in chunks[1:-1]) == chunks[-1].done.text == "use reversed ( )"
    assert chunks[-1].done.emotion == result(CODING)
    assert fake.stats("coder")["requests"] == 1


async def test_switched_stream_sends_only_the_chosen_providers_text(
    fake: FakeLLMServer, make_router: RouterFactory, emotion_server: tuple[ScriptedEmotion, str]
) -> None:
    emotion, addr = emotion_server
    emotion.probs, emotion.delay = MATHY, 0.1
    fake.configure("coder", default_reply="WRONG WRONG", ttft_ms=5, tokens_per_second=20)
    fake.configure("mathematician", default_reply="x = 11")
    async with make_router(coder_and_mathematician(fake), EMOTION_ADDR=addr) as (_app, stub):
        chunks = [c async for c in stub.GenerateStream(ask(QUESTION, analyze_emotion=True), timeout=10)]
    assert chunks[0].decision.speculation == router_pb2.SPECULATION_SWITCHED
    assert chunks[0].decision.provider == "mathematician"
    assert "".join(c.delta for c in chunks if c.WhichOneof("kind") == "delta") == "x = 11"
    assert chunks[-1].done.provider == "mathematician"


async def test_no_emotion_service_routes_without_it(fake: FakeLLMServer, make_router: RouterFactory) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    fake.configure("coder", default_reply="slicing")
    async with make_router(coder_and_mathematician(fake), EMOTION_ADDR=dead) as (_app, stub):
        resp = await stub.Generate(ask(QUESTION, analyze_emotion=True), timeout=10)
    assert resp.text == "slicing" and resp.provider == "coder"
    assert resp.decision.speculation == router_pb2.SPECULATION_NO_ANALYSIS
    assert not resp.HasField("emotion") and resp.decision.category_source == "classifier"
    assert fake.stats("coder")["requests"] == 1


async def test_speculation_off_waits_for_the_analysis(
    fake: FakeLLMServer, make_router: RouterFactory, emotion_server: tuple[ScriptedEmotion, str]
) -> None:
    emotion, addr = emotion_server
    emotion.probs = MATHY
    fake.configure("mathematician", default_reply="x = 11")
    async with make_router(coder_and_mathematician(fake), EMOTION_ADDR=addr, ROUTER_SPECULATE="0") as (_app, stub):
        resp = await stub.Generate(ask(QUESTION, analyze_emotion=True), timeout=10)
    assert resp.provider == "mathematician" and resp.decision.speculation == router_pb2.SPECULATION_UNSPECIFIED
    assert fake.stats("coder")["requests"] == 0  # nothing was started before the analysis
    assert resp.emotion == result(MATHY)


async def test_pinned_request_is_analysed_alongside_the_call(
    fake: FakeLLMServer, make_router: RouterFactory, emotion_server: tuple[ScriptedEmotion, str]
) -> None:
    emotion, addr = emotion_server
    emotion.probs = MATHY
    fake.configure("coder", default_reply="pinned answer")
    async with make_router(coder_and_mathematician(fake), EMOTION_ADDR=addr) as (_app, stub):
        resp = await stub.Generate(ask(QUESTION, analyze_emotion=True, pinned_provider="coder"), timeout=10)
    assert resp.provider == "coder" and resp.text == "pinned answer"
    assert resp.decision.speculation == router_pb2.SPECULATION_CONFIRMED
    assert resp.emotion == result(MATHY) and fake.stats("mathematician")["requests"] == 0


async def test_an_emotion_result_in_the_request_wins_over_analyze(
    fake: FakeLLMServer, make_router: RouterFactory, emotion_server: tuple[ScriptedEmotion, str]
) -> None:
    emotion, addr = emotion_server
    async with make_router(coder_and_mathematician(fake), EMOTION_ADDR=addr) as (_app, stub):
        resp = await stub.Generate(ask(QUESTION, analyze_emotion=True, emotion=result(MATHY)), timeout=10)
    assert resp.provider == "mathematician" and resp.decision.speculation == router_pb2.SPECULATION_UNSPECIFIED
    assert emotion.requests == [] and not resp.HasField("emotion")


async def test_an_unsure_early_category_waits_for_the_analysis(
    fake: FakeLLMServer, make_router: RouterFactory, emotion_server: tuple[ScriptedEmotion, str]
) -> None:
    emotion, addr = emotion_server
    emotion.probs = MATHY
    fake.configure("mathematician", default_reply="x = 11")
    env = {"EMOTION_ADDR": addr, "ROUTER_SPECULATE_MIN_CONFIDENCE": "1.0"}  # the classifier is never that sure
    async with make_router(coder_and_mathematician(fake), **env) as (_app, stub):
        resp = await stub.Generate(ask(QUESTION, analyze_emotion=True), timeout=10)
        hinted = await stub.Generate(
            ask(QUESTION, analyze_emotion=True, category=common_pb2.CATEGORY_CODING), timeout=10
        )
    assert resp.provider == "mathematician" and resp.decision.speculation == router_pb2.SPECULATION_NOT_STARTED
    assert hinted.provider == "coder" and hinted.decision.speculation == router_pb2.SPECULATION_CONFIRMED
    assert fake.stats("coder")["requests"] == 1  # only the hinted request, whose category was certain
