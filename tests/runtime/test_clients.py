"""masterx_runtime.clients.channel: request-id propagation on every kind of call (unary, unary-stream, stream-stream), over real gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.interceptors import REQUEST_ID_KEY
from masterx_runtime.logs import request_id_var


class Seen(emotion_pb2_grpc.EmotionServiceServicer):  # type: ignore[misc]
    """Answers with the x-request-id the call arrived with ('' without one)."""

    @staticmethod
    def rid(context: Any) -> str:
        return dict(context.invocation_metadata()).get(REQUEST_ID_KEY, "")

    async def Analyze(self, request: Any, context: Any) -> emotion_pb2.AnalyzeResponse:
        return emotion_pb2.AnalyzeResponse(request_id=self.rid(context))

    async def AnalyzeBatch(self, request: Any, context: Any) -> emotion_pb2.AnalyzeBatchResponse:
        return emotion_pb2.AnalyzeBatchResponse()

    async def StreamAnalyze(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for _request in requests:
            yield emotion_pb2.AnalyzeResponse(request_id=self.rid(context))


async def serve() -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    emotion_pb2_grpc.add_EmotionServiceServicer_to_server(Seen(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_calls_carry_the_current_request_id_and_an_explicit_one_wins() -> None:
    server, addr = await serve()
    try:
        async with channel(addr) as chan:
            stub = emotion_pb2_grpc.EmotionServiceStub(chan)
            ask = emotion_pb2.AnalyzeRequest(text="hi")
            assert (await stub.Analyze(ask, timeout=5)).request_id == ""  # none set: none sent
            token = request_id_var.set("turn-42")
            try:
                unary = await stub.Analyze(ask, timeout=5)
                streamed = [r.request_id async for r in stub.StreamAnalyze(iter([ask, ask]), timeout=5)]
                explicit = await stub.Analyze(ask, timeout=5, metadata=((REQUEST_ID_KEY, "mine"),))
                other = await stub.Analyze(ask, timeout=5, metadata=grpc.aio.Metadata(("x-other", "1")))
            finally:
                request_id_var.reset(token)
    finally:
        await server.stop(0)
    assert unary.request_id == "turn-42" and streamed == ["turn-42", "turn-42"]
    assert explicit.request_id == "mine" and other.request_id == "turn-42"


async def test_the_channel_reports_connectivity_like_a_plain_one() -> None:
    server, addr = await serve()
    try:
        chan = channel(addr)
        await chan.channel_ready()
        assert chan.get_state() == grpc.ChannelConnectivity.READY
        await chan.close()
    finally:
        await server.stop(0)


class Router(router_pb2_grpc.RouterServiceServicer):  # type: ignore[misc]
    """GenerateStream answers one delta: the x-request-id the call arrived with."""

    async def GenerateStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield router_pb2.GenerateChunk(delta=dict(context.invocation_metadata()).get(REQUEST_ID_KEY, "<none>"))


async def test_a_unary_stream_call_carries_the_request_id() -> None:
    """The gateway's streamed chat turn (GenerateStream) is traceable into the router."""
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServiceServicer_to_server(Router(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with channel(f"127.0.0.1:{port}") as chan:
            stub = router_pb2_grpc.RouterServiceStub(chan)
            token = request_id_var.set("turn-7")
            try:
                iterated = [c.delta async for c in stub.GenerateStream(router_pb2.GenerateRequest(), timeout=5)]
                call = stub.GenerateStream(router_pb2.GenerateRequest(), timeout=5)
                read = [(await call.read()).delta]
            finally:
                request_id_var.reset(token)
    finally:
        await server.stop(0)
    assert iterated == ["turn-7"] and read == ["turn-7"]
