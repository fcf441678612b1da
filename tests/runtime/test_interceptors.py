"""The server interceptor (masterx_runtime.interceptors.RuntimeInterceptor) through real servers.

Its wrapped handler is built once per method and reused, so these check that per-call state
stays per call: every call its own request id and status, metrics per status code, errors mapped
the same on the first and the n-th call; for all four RPC shapes, the readiness gate and the
shared input rules; and with tracing on (the OpenTelemetry interceptor outside it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.errors import ERROR_DETAIL_KEY, InvalidArgument, error_detail_from
from masterx_runtime.interceptors import REQUEST_ID_KEY, RuntimeInterceptor, default_interceptors
from masterx_runtime.server import GrpcServer
from masterx_runtime.testing.otlp_receiver import OtlpReceiver
from tests.runtime.test_server import ScriptedApp, ScriptedEmotion, settings

ANALYZE = "/masterx.emotion.v1.EmotionService/Analyze"


def total(service: str, method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("masterx_rpc_total", {"service": service, "method": method, "code": code})
    return value or 0.0


def latency_count(service: str, method: str) -> float:
    value = REGISTRY.get_sample_value("masterx_rpc_latency_seconds_count", {"service": service, "method": method})
    return value or 0.0


def in_flight(service: str) -> float:
    return REGISTRY.get_sample_value("masterx_rpc_in_flight", {"service": service}) or 0.0


def request_id(err: grpc.aio.AioRpcError) -> str:
    return dict(err.trailing_metadata() or ())[REQUEST_ID_KEY]


class TimeoutEmotion(ScriptedEmotion):
    async def Analyze(
        self, request: emotion_pb2.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> emotion_pb2.AnalyzeResponse:
        if request.text == "timeout":
            raise TimeoutError
        return await super().Analyze(request, context)


class CachedApp(ScriptedApp):
    name = "cached"

    def __init__(self) -> None:
        super().__init__()
        self.servicer = TimeoutEmotion()  # type: ignore[abstract]


async def test_every_call_of_a_method_gets_its_own_request_id_status_and_metrics() -> None:
    server = GrpcServer(CachedApp(), settings())
    await server.start()
    before = {
        code: total("cached", ANALYZE, code) for code in ("OK", "INVALID_ARGUMENT", "INTERNAL", "DEADLINE_EXCEEDED")
    }
    count_before = latency_count("cached", ANALYZE)
    try:
        async with channel(f"127.0.0.1:{server.port}") as chan:
            stub = emotion_pb2_grpc.EmotionServiceStub(chan)
            req = emotion_pb2.AnalyzeRequest(text="fine")
            for rid in ("r-1", "r-2"):
                call = stub.Analyze(req, metadata=((REQUEST_ID_KEY, rid),))
                assert (await call).request_id == "done"
                assert dict(await call.trailing_metadata())[REQUEST_ID_KEY] == rid
            made = []
            for _ in range(2):  # no id sent: a fresh uuid4 each call
                call = stub.Analyze(req)
                await call
                made.append(dict(await call.trailing_metadata())[REQUEST_ID_KEY])
            assert made[0] != made[1] and all(uuid.UUID(hex=r).version == 4 and len(r) == 32 for r in made)

            for attempt in range(2):  # the same mapping on the first and the second error
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Analyze(
                        emotion_pb2.AnalyzeRequest(text=" "), metadata=((REQUEST_ID_KEY, f"bad-{attempt}"),)
                    )
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert request_id(err.value) == f"bad-{attempt}"
                detail = error_detail_from(err.value)
                assert detail is not None and detail.reason == "EMPTY_TEXT" and detail.service == "cached"

                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Analyze(emotion_pb2.AnalyzeRequest(text="boom"))
                assert err.value.code() == grpc.StatusCode.INTERNAL
                assert err.value.details() == f"internal error (RuntimeError); request id {request_id(err.value)}"
                assert error_detail_from(err.value) is None

                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Analyze(emotion_pb2.AnalyzeRequest(text="timeout"))
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert err.value.details() == "deadline exceeded"

            assert (await stub.Analyze(req)).request_id == "done"
    finally:
        await server.stop()
    assert total("cached", ANALYZE, "OK") - before["OK"] == 5
    assert total("cached", ANALYZE, "INVALID_ARGUMENT") - before["INVALID_ARGUMENT"] == 2
    assert total("cached", ANALYZE, "INTERNAL") - before["INTERNAL"] == 2
    assert total("cached", ANALYZE, "DEADLINE_EXCEEDED") - before["DEADLINE_EXCEEDED"] == 2
    assert latency_count("cached", ANALYZE) - count_before == 11
    assert in_flight("cached") == 0


async def test_shared_input_rules_answer_invalid_argument_naming_the_field() -> None:
    server = GrpcServer(CachedApp(), settings())
    await server.start()
    try:
        async with channel(f"127.0.0.1:{server.port}") as chan:
            stub = emotion_pb2_grpc.EmotionServiceStub(chan)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi", user_id="no spaces; allowed"))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                detail = error_detail_from(err.value)
                assert detail is not None and detail.field == "user_id" and detail.reason == "INVALID_USER_ID"
                assert (err.value.details() or "").startswith("user_id: ")

            # a request stream: checked message by message, the good ones before the bad one flow
            good, bad = (
                emotion_pb2.AnalyzeRequest(text="a", request_id="1"),
                emotion_pb2.AnalyzeRequest(text="x" * 200_000),
            )
            call = stub.StreamAnalyze(iter([good, bad]))
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for resp in call:
                    got.append(resp.request_id)
            assert got == ["1"] and err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            detail = error_detail_from(err.value)
            assert detail is not None and detail.field == "text" and detail.reason == "TOO_LONG"
    finally:
        await server.stop()


async def test_health_calls_get_a_request_id_and_no_rpc_metrics() -> None:
    server = GrpcServer(CachedApp(), settings())
    await server.start()
    try:
        async with channel(f"127.0.0.1:{server.port}") as chan:
            call = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=""), metadata=((REQUEST_ID_KEY, "hc-1"),), timeout=2
            )
            assert (await call).status == health_pb2.HealthCheckResponse.SERVING
            assert dict(await call.trailing_metadata())[REQUEST_ID_KEY] == "hc-1"
    finally:
        await server.stop()
    assert total("cached", "/grpc.health.v1.Health/Check", "OK") == 0


async def test_the_wrapped_handler_is_built_once_per_method() -> None:
    interceptor = RuntimeInterceptor("once")

    async def noop(request: Any, context: Any) -> Any:
        return request

    first = grpc.unary_unary_rpc_method_handler(noop)
    current = [first]

    async def continuation(details: Any) -> Any:
        return current[0]

    class Details:
        method = "/x.Y/Z"
        invocation_metadata = ()

    a = await interceptor.intercept_service(continuation, Details())  # type: ignore[arg-type]
    b = await interceptor.intercept_service(continuation, Details())  # type: ignore[arg-type]
    assert a is b and a is not first
    current[0] = grpc.unary_unary_rpc_method_handler(noop)  # a different handler for the method
    assert await interceptor.intercept_service(continuation, Details()) is not a  # type: ignore[arg-type]
    current[0] = None
    assert await interceptor.intercept_service(continuation, Details()) is None  # type: ignore[arg-type]


# -- all four RPC shapes on a plain server with the interceptor ------------------------------------


def _shapes() -> grpc.GenericRpcHandler:
    async def uu(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"bad":
            raise InvalidArgument("bad request", reason="BAD", field="body")
        if request == b"bug":
            raise KeyError("bug")
        return request

    async def us(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(3):
            if request == b"bad" and i == 1:
                raise InvalidArgument("bad request", reason="BAD", field="body")
            yield request + bytes([48 + i])

    async def us_write(request: bytes, context: grpc.aio.ServicerContext) -> None:  # the reader/writer API
        await context.write(request + b"!")
        if request == b"bad":
            raise InvalidArgument("bad request", reason="BAD", field="body")
        await context.write(request + b"?")

    async def su(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        parts = []
        async for r in requests:
            if r == b"bad":
                raise InvalidArgument("bad request", reason="BAD", field="body")
            parts.append(r)
        return b"+".join(parts)

    async def ss(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for r in requests:
            if r == b"bad":
                raise InvalidArgument("bad request", reason="BAD", field="body")
            yield r.upper()

    return grpc.method_handlers_generic_handler(
        "test.Shapes",
        {
            "UU": grpc.unary_unary_rpc_method_handler(uu),
            "US": grpc.unary_stream_rpc_method_handler(us),
            "USWrite": grpc.unary_stream_rpc_method_handler(us_write),
            "SU": grpc.stream_unary_rpc_method_handler(su),
            "SS": grpc.stream_stream_rpc_method_handler(ss),
        },
    )


async def _plain_server(gate: Callable[[], str]) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=default_interceptors("shapes", gate))
    server.add_generic_rpc_handlers((_shapes(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _finish(call: Any) -> None:
    """Await a unary call, or read a streaming one to its end."""
    if hasattr(call, "__aiter__"):
        async for _ in call:
            pass
    else:
        await call


async def _expect_bad(call: Any, rid: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _finish(call)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    detail = error_detail_from(err.value)
    assert detail is not None and detail.reason == "BAD" and detail.field == "body" and detail.service == "shapes"
    trailers = dict(err.value.trailing_metadata() or ())
    assert trailers[REQUEST_ID_KEY] == rid and ERROR_DETAIL_KEY in trailers


async def test_all_four_rpc_shapes_twice_each() -> None:
    reason = [""]
    server, port = await _plain_server(lambda: reason[0])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            uu = chan.unary_unary("/test.Shapes/UU")
            us = chan.unary_stream("/test.Shapes/US")
            us_write = chan.unary_stream("/test.Shapes/USWrite")
            su = chan.stream_unary("/test.Shapes/SU")
            ss = chan.stream_stream("/test.Shapes/SS")
            for n in range(2):
                md = ((REQUEST_ID_KEY, f"ok-{n}"),)
                call = uu(b"x", metadata=md)
                assert await call == b"x" and dict(await call.trailing_metadata())[REQUEST_ID_KEY] == f"ok-{n}"
                stream = us(b"x", metadata=md)
                assert [m async for m in stream] == [b"x0", b"x1", b"x2"]
                assert dict(await stream.trailing_metadata())[REQUEST_ID_KEY] == f"ok-{n}"
                assert [m async for m in us_write(b"x", metadata=md)] == [b"x!", b"x?"]
                assert await su(iter([b"a", b"b"]), metadata=md) == b"a+b"
                assert [m async for m in ss(iter([b"a", b"b"]), metadata=md)] == [b"A", b"B"]

                bad = ((REQUEST_ID_KEY, f"bad-{n}"),)
                await _expect_bad(uu(b"bad", metadata=bad), f"bad-{n}")
                await _expect_bad(us(b"bad", metadata=bad), f"bad-{n}")
                await _expect_bad(us_write(b"bad", metadata=bad), f"bad-{n}")
                await _expect_bad(su(iter([b"a", b"bad"]), metadata=bad), f"bad-{n}")
                await _expect_bad(ss(iter([b"a", b"bad"]), metadata=bad), f"bad-{n}")

                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await uu(b"bug", metadata=bad)
                assert err.value.code() == grpc.StatusCode.INTERNAL
                assert err.value.details() == f"internal error (KeyError); request id bad-{n}"

            reason[0] = "shapes is starting: waiting for redis"
            for call in (uu(b"x"), us(b"x"), su(iter([b"a"])), ss(iter([b"a"]))):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await _finish(call)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert err.value.details() == "shapes is starting: waiting for redis"
                detail = error_detail_from(err.value)
                assert detail is not None and detail.reason == "NOT_SERVING"
            reason[0] = ""
            assert await uu(b"again") == b"again"
    finally:
        await server.stop(0)
    assert total("shapes", "/test.Shapes/UU", "OK") == 3
    assert total("shapes", "/test.Shapes/UU", "INVALID_ARGUMENT") == 2
    assert total("shapes", "/test.Shapes/UU", "UNAVAILABLE") == 1
    assert total("shapes", "/test.Shapes/SS", "OK") == 2
    assert in_flight("shapes") == 0


async def test_cancelled_calls_are_counted_and_leave_nothing_in_flight() -> None:
    started = asyncio.Event()

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started.set()
        await asyncio.sleep(30)
        return request

    server = grpc.aio.server(interceptors=default_interceptors("cancel"))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(slow)}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            call = chan.unary_unary("/test.Slow/Call")(b"x")
            await asyncio.wait_for(started.wait(), 5)
            assert in_flight("cancel") == 1
            call.cancel()
            for _ in range(100):
                if total("cancel", "/test.Slow/Call", "CANCELLED"):
                    break
                await asyncio.sleep(0.02)
    finally:
        await server.stop(0)
    assert total("cancel", "/test.Slow/Call", "CANCELLED") == 1
    assert in_flight("cancel") == 0


def test_with_tracing_on_errors_and_request_ids_still_work_and_spans_are_exported() -> None:
    code = textwrap.dedent(
        """
        import asyncio, os, sys
        sys.path.insert(0, os.getcwd())
        import grpc
        from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
        from masterx_runtime import tracing
        from masterx_runtime.errors import error_detail_from
        from masterx_runtime.server import GrpcServer
        from tests.runtime.test_server import ScriptedApp, settings

        assert tracing.setup("scripted")

        async def main():
            server = GrpcServer(ScriptedApp(), settings())
            await server.start()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
                stub = emotion_pb2_grpc.EmotionServiceStub(chan)
                for n in range(2):
                    call = stub.Analyze(emotion_pb2.AnalyzeRequest(text="fine"), metadata=(("x-request-id", f"t-{n}"),))
                    assert (await call).request_id == "done"
                    assert dict(await call.trailing_metadata())["x-request-id"] == f"t-{n}"
                    try:
                        await stub.Analyze(emotion_pb2.AnalyzeRequest(text=" "), metadata=(("x-request-id", "e"),))
                    except grpc.aio.AioRpcError as err:
                        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
                        assert error_detail_from(err).reason == "EMPTY_TEXT"
                        assert dict(err.trailing_metadata())["x-request-id"] == "e"
                    else:
                        raise AssertionError("no error")
            await server.stop(0)

        asyncio.run(main())
        tracing.shutdown()
        print("ok")
        """
    )
    with OtlpReceiver() as otlp:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
        spans = otlp.wait_for(lambda s: len([x for x in s if x.name.endswith("Analyze")]) >= 4, timeout=10)
    analyze = [s for s in spans if s.name.endswith("Analyze")]
    assert len(analyze) == 4 and {s.service for s in analyze} == {"masterx-scripted"}
    assert not [s for s in spans if "grpc.health" in s.name]
