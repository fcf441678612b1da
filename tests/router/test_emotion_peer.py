"""EmotionPeer: the router's analyses on one StreamAnalyze call (or unary Analyze calls).

The peer talks to a scripted emotion service, a real gRPC server on loopback that answers each
message with its own text (as the primary emotion) after a per-text delay, so a reply that
reached the wrong caller, or a stream that fell out of step, shows in the answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.interceptors import REQUEST_ID_KEY
from masterx_runtime.logs import request_id_var
from masterx_runtime.testing.servers import free_port
from services.router.domain import RouteRequest
from services.router.emotion_peer import EmotionPeer
from services.router.providers.base import ChatRequest, Message


class Echo(emotion_pb2_grpc.EmotionServiceServicer):  # type: ignore[misc]
    """Answers a text with itself; ``delays`` per text; texts in ``fail`` get a per-message error."""

    def __init__(self) -> None:
        self.delays: dict[str, float] = {}
        self.fail: set[str] = set()
        self.unary = 0
        self.streams = 0
        self.stream_metadata: list[dict[str, str]] = []

    async def _answer(self, request: emotion_pb2.AnalyzeRequest) -> emotion_pb2.AnalyzeResponse:
        await asyncio.sleep(self.delays.get(request.text, 0.0))
        if request.text in self.fail:
            return emotion_pb2.AnalyzeResponse(error="INVALID_ARGUMENT: scripted failure")
        return emotion_pb2.AnalyzeResponse(result=common_pb2.EmotionResult(primary_emotion=request.text))

    async def Analyze(self, request: emotion_pb2.AnalyzeRequest, context: Any) -> emotion_pb2.AnalyzeResponse:
        self.unary += 1
        return await self._answer(request)

    async def StreamAnalyze(
        self, requests: AsyncIterator[emotion_pb2.AnalyzeRequest], context: Any
    ) -> AsyncIterator[emotion_pb2.AnalyzeResponse]:
        self.streams += 1
        self.stream_metadata.append({k: v for k, v in context.invocation_metadata()})
        pending: asyncio.Queue[asyncio.Task[emotion_pb2.AnalyzeResponse] | None] = asyncio.Queue()

        async def read() -> None:
            async for request in requests:
                pending.put_nowait(asyncio.create_task(self._answer(request)))
            pending.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await pending.get()) is not None:
                yield await task
        finally:
            reader.cancel()


async def start(echo: Echo, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    emotion_pb2_grpc.add_EmotionServiceServicer_to_server(echo, server)  # type: ignore[arg-type]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


@pytest.fixture
async def service() -> AsyncIterator[tuple[Echo, int]]:
    echo, port = Echo(), free_port()  # type: ignore[abstract]
    server = await start(echo, port)
    try:
        yield echo, port
    finally:
        await server.stop(0)


def primary(response: Any) -> Any:
    """The peer's conversion, reduced to what the tests compare: the echoed text."""
    return response.result.primary_emotion


def peer(port: int, **kw: Any) -> EmotionPeer:
    return EmotionPeer(f"127.0.0.1:{port}", timeout_seconds=2.0, convert=primary, **kw)


def req(text: str) -> RouteRequest:
    return RouteRequest(ChatRequest((Message("user", text),)), user_id="u1", session_id="s1", analyze=True)


async def test_concurrent_analyses_share_one_stream_and_each_gets_its_own_answer(service: tuple[Echo, int]) -> None:
    echo, port = service
    # later messages finish first on the service: the answers still come back in order
    echo.delays = {f"m{i}": 0.05 * (5 - i) / 5 for i in range(5)}
    p = peer(port)
    try:
        answers = await asyncio.gather(*(p.analyze(req(f"m{i}")) for i in range(5)))
        again = await p.analyze(req("after"))
    finally:
        await p.close()
    assert answers == [f"m{i}" for i in range(5)] and again == "after"
    assert (echo.streams, echo.unary, p.streams_opened, p.failures) == (1, 0, 1, 0)


async def test_a_late_answer_is_dropped_and_the_next_ones_stay_in_step(service: tuple[Echo, int]) -> None:
    echo, port = service
    echo.delays = {"slow": 0.3}
    p = peer(port)
    try:
        slow = asyncio.ensure_future(p.analyze(req("slow"), timeout=0.05))
        await asyncio.sleep(0.01)
        fast = asyncio.gather(*(p.analyze(req(f"f{i}")) for i in range(3)))
        assert await slow is None and "DEADLINE_EXCEEDED" in p.last_error
        # answers come in request order: the quick ones wait behind the slow one's late answer,
        # which is dropped, and each still gets its own
        assert await fast == ["f0", "f1", "f2"]
        later = await p.analyze(req("later"))
    finally:
        await p.close()
    assert later == "later"
    assert p.streams_opened == 1 and p.failures == 1


async def test_a_message_the_service_rejects_gives_none_and_keeps_the_stream(service: tuple[Echo, int]) -> None:
    echo, port = service
    echo.fail = {"bad"}
    p = peer(port)
    try:
        bad = await p.analyze(req("bad"))
        why = p.last_error
        good = await p.analyze(req("good"))
    finally:
        await p.close()
    assert bad is None and good == "good"
    assert why == "INVALID_ARGUMENT: scripted failure" and p.last_error == ""  # cleared by the good one
    assert p.failures == 1 and p.streams_opened == 1


async def test_a_restarted_service_gets_a_new_stream() -> None:
    echo, port = Echo(), free_port()  # type: ignore[abstract]
    server = await start(echo, port)
    p = peer(port)
    try:
        assert await p.analyze(req("one")) == "one"
        echo.delays = {"in flight": 5.0}
        in_flight = asyncio.ensure_future(p.analyze(req("in flight")))
        await asyncio.sleep(0.1)
        await server.stop(0)  # the service goes away with a message in flight ...
        assert await asyncio.wait_for(in_flight, 3) is None
        assert p.last_error.split(":")[0] in ("UNAVAILABLE", "CANCELLED")
        echo2 = Echo()  # type: ignore[abstract]
        server = await start(echo2, port)  # ... and comes back on the same port
        answer = None
        for _ in range(50):  # the channel reconnects with a capped backoff
            answer = await p.analyze(req("two"))
            if answer is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        await p.close()
        await server.stop(0)
    assert answer == "two" and echo2.streams == 1 and p.streams_opened >= 2


async def test_unary_mode_makes_one_analyze_call_each(service: tuple[Echo, int]) -> None:
    echo, port = service
    p = peer(port, stream=False)
    try:
        answers = await asyncio.gather(*(p.analyze(req(f"m{i}")) for i in range(3)))
    finally:
        await p.close()
    assert answers == ["m0", "m1", "m2"] and (echo.unary, echo.streams) == (3, 0)


async def test_the_stream_does_not_carry_the_request_id_of_the_request_that_opened_it(
    service: tuple[Echo, int],
) -> None:
    echo, port = service
    p = peer(port)
    token = request_id_var.set("req-that-opened-it")
    try:
        assert await p.analyze(req("hello")) == "hello"
    finally:
        request_id_var.reset(token)
        await p.close()
    assert echo.stream_metadata and REQUEST_ID_KEY not in echo.stream_metadata[0]


async def test_no_address_means_no_analysis() -> None:
    p = EmotionPeer("", timeout_seconds=1.0, convert=primary)
    assert await p.analyze(req("x")) is None
    await p.close()
