"""The service runtime: health transitions, graceful drain, error mapping, metrics, request ids."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.errors import InvalidArgument, error_detail_from
from masterx_runtime.server import GrpcServer, ServiceApp
from masterx_runtime.settings import ServerSettings

SERVICE = "masterx.emotion.v1.EmotionService"


class ScriptedEmotion(emotion_pb2_grpc.EmotionServiceServicer):
    """A tiny servicer whose behaviour is chosen by the request text."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def Analyze(
        self, request: emotion_pb2.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> emotion_pb2.AnalyzeResponse:
        if not request.text.strip():
            raise InvalidArgument("text must not be empty", reason="EMPTY_TEXT", field="text")
        if request.text == "boom":
            raise RuntimeError("bug")
        if request.text.startswith("sleep:"):
            self.started.set()
            await asyncio.sleep(float(request.text.split(":")[1]))
        return emotion_pb2.AnalyzeResponse(request_id=request.request_id or "done")

    async def StreamAnalyze(
        self, request_iterator: AsyncIterator[emotion_pb2.AnalyzeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[emotion_pb2.AnalyzeResponse]:
        async for req in request_iterator:
            if req.text == "bad":
                raise InvalidArgument("bad message in stream")
            yield emotion_pb2.AnalyzeResponse(request_id=req.request_id)


class ScriptedApp(ServiceApp):
    name = "scripted"
    service_names = (SERVICE,)
    default_grpc_port = 0
    default_metrics_port = 0

    def __init__(self, ready: asyncio.Event | None = None) -> None:
        self.servicer = ScriptedEmotion()  # type: ignore[abstract]
        self.ready = ready
        self.stopped = False

    def register(self, server: grpc.aio.Server) -> None:
        emotion_pb2_grpc.add_EmotionServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        if self.ready is not None:
            await self.ready.wait()

    async def stop(self) -> None:
        self.stopped = True

    def health_details(self) -> dict[str, str]:
        return {"execution_provider": "test"}


def settings(**kw: object) -> ServerSettings:
    values: dict[str, object] = {"grpc_port": 0, "metrics_port": 0, "shutdown_grace_seconds": 5.0, **kw}
    return dataclasses.replace(ServerSettings(), **values)  # type: ignore[arg-type]


async def status(chan: grpc.aio.Channel, service: str) -> str:
    resp = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


async def test_health_is_not_serving_until_ready_then_serving() -> None:
    ready = asyncio.Event()
    server = GrpcServer(ScriptedApp(ready), settings())
    start = asyncio.create_task(server.start())
    for _ in range(100):
        if server.port:
            break
        await asyncio.sleep(0.01)
    async with channel(f"127.0.0.1:{server.port}") as chan:
        for _ in range(100):  # health is registered before the port starts answering
            try:
                assert await status(chan, "") == "NOT_SERVING"
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.02)
        assert await status(chan, SERVICE) == "NOT_SERVING"
        ready.set()
        await start
        assert await status(chan, "") == "SERVING"
        assert await status(chan, SERVICE) == "SERVING"
        async with httpx.AsyncClient() as http:
            details = (await http.get(f"http://127.0.0.1:{server.metrics_port}/health")).json()
        assert details == {"service": "scripted", "status": "SERVING", "execution_provider": "test"}
    await server.stop()


async def test_sigterm_drain_completes_in_flight_call_and_reports_not_serving() -> None:
    app = ScriptedApp()
    server = GrpcServer(app, settings())
    await server.start()
    async with channel(f"127.0.0.1:{server.port}") as chan:
        stub = emotion_pb2_grpc.EmotionServiceStub(chan)
        in_flight = asyncio.ensure_future(
            stub.Analyze(emotion_pb2.AnalyzeRequest(text="sleep:0.6", request_id="slow"), timeout=10)
        )
        await app.servicer.started.wait()
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.1)
        assert server.state == "DRAINING"
        assert await server.health.Check(
            health_pb2.HealthCheckRequest(service=""), None
        ) == health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        response = await in_flight
        assert response.request_id == "slow"
        await stopping
    assert app.stopped
    assert server.state == "STOPPED"


async def test_drain_cancels_calls_that_outlive_the_grace_period() -> None:
    app = ScriptedApp()
    server = GrpcServer(app, settings(shutdown_grace_seconds=0.2))
    await server.start()
    async with channel(f"127.0.0.1:{server.port}") as chan:
        stub = emotion_pb2_grpc.EmotionServiceStub(chan)
        call = asyncio.ensure_future(stub.Analyze(emotion_pb2.AnalyzeRequest(text="sleep:30"), timeout=10))
        await app.servicer.started.wait()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await server.stop()
        assert loop.time() - t0 < 3
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


async def test_service_errors_map_to_status_codes_with_detail_and_request_id() -> None:
    server = GrpcServer(ScriptedApp(), settings())
    await server.start()
    try:
        async with channel(f"127.0.0.1:{server.port}") as chan:
            stub = emotion_pb2_grpc.EmotionServiceStub(chan)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Analyze(emotion_pb2.AnalyzeRequest(text="  "), metadata=(("x-request-id", "abc123"),))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == "text must not be empty"
            detail = error_detail_from(err.value)
            assert detail is not None and detail.reason == "EMPTY_TEXT" and detail.field == "text"
            assert detail.service == "scripted"
            assert ("x-request-id", "abc123") in tuple(err.value.trailing_metadata())

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Analyze(emotion_pb2.AnalyzeRequest(text="boom"))
            assert err.value.code() == grpc.StatusCode.INTERNAL
            assert "RuntimeError" in (err.value.details() or "")

            # streaming: good messages flow, a bad one ends the stream with INVALID_ARGUMENT
            call = stub.StreamAnalyze(
                iter([emotion_pb2.AnalyzeRequest(text="a", request_id="1"), emotion_pb2.AnalyzeRequest(text="bad")])
            )
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for resp in call:
                    got.append(resp.request_id)
            assert got == ["1"]
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            # and the server keeps serving
            assert (await stub.Analyze(emotion_pb2.AnalyzeRequest(text="fine"))).request_id == "done"
    finally:
        await server.stop()


async def test_metrics_endpoint_counts_rpcs_by_code() -> None:
    server = GrpcServer(ScriptedApp(), settings())
    await server.start()
    try:
        async with channel(f"127.0.0.1:{server.port}") as chan:
            stub = emotion_pb2_grpc.EmotionServiceStub(chan)
            await stub.Analyze(emotion_pb2.AnalyzeRequest(text="x"))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Analyze(emotion_pb2.AnalyzeRequest(text=""))
        async with httpx.AsyncClient() as http:
            body = (await http.get(f"http://127.0.0.1:{server.metrics_port}/metrics")).text
        method = "/masterx.emotion.v1.EmotionService/Analyze"
        assert f'masterx_rpc_total{{code="OK",method="{method}",service="scripted"}}' in body
        assert f'masterx_rpc_total{{code="INVALID_ARGUMENT",method="{method}",service="scripted"}}' in body
        assert 'masterx_serving{service="scripted"} 1.0' in body
    finally:
        await server.stop()


async def test_client_deadline_reaches_the_handler() -> None:
    server = GrpcServer(ScriptedApp(), settings())
    await server.start()
    try:
        async with channel(f"127.0.0.1:{server.port}") as chan:
            stub = emotion_pb2_grpc.EmotionServiceStub(chan)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Analyze(emotion_pb2.AnalyzeRequest(text="sleep:5"), timeout=0.2)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await server.stop()
