"""Readiness: NOT_SERVING while a required store is down, UNAVAILABLE with a reason, retry at start."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import httpx
import pytest

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.clients import channel, channel_options
from masterx_runtime.errors import Unavailable, error_detail_from
from masterx_runtime.readiness import Dependency
from masterx_runtime.server import GrpcServer
from masterx_runtime.settings import ReliabilitySettings
from tests.runtime.test_server import SERVICE, ScriptedApp, settings, status

FAST = dataclasses.replace(ReliabilitySettings(), store_check_seconds=0.05, start_retry_max_seconds=0.05)


class Flaky:
    def __init__(self) -> None:
        self.up = True

    async def probe(self) -> None:
        if not self.up:
            raise ConnectionRefusedError("store down")


class StoreApp(ScriptedApp):
    def __init__(self, store: Flaky, *, required: bool, fail_starts: int = 0) -> None:
        super().__init__()
        self.store = store
        self.required = required
        self.fail_starts = fail_starts
        self.starts = self.stops = 0
        self.second_start = asyncio.Event()

    async def start(self) -> None:
        self.starts += 1
        if self.starts == 2:
            self.second_start.set()
        if self.starts <= self.fail_starts:
            raise Unavailable("mongodb not reachable", dependency="mongodb")

    async def stop(self) -> None:
        self.stops += 1

    def dependencies(self) -> list[Dependency]:
        return [Dependency("mongodb", self.store.probe, self.required)]


async def _until(chan: grpc.aio.Channel, want: str, timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await status(chan, SERVICE) == want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"health never became {want}")


async def test_required_store_down_means_not_serving_and_unavailable_with_reason() -> None:
    store = Flaky()
    server = GrpcServer(StoreApp(store, required=True), settings(), FAST)
    await server.start()
    try:
        async with channel(f"127.0.0.1:{server.port}") as chan:
            stub = emotion_pb2_grpc.EmotionServiceStub(chan)
            assert (await stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi"), timeout=2)).request_id == "done"
            store.up = False
            await _until(chan, "NOT_SERVING")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi"), timeout=2)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == "scripted is not serving: mongodb is down"
            detail = error_detail_from(err.value)
            assert detail is not None and detail.reason == "NOT_SERVING"
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"http://127.0.0.1:{server.metrics_port}/health")).json()
            assert health["status"] == "NOT_SERVING" and health["stores"]["mongodb"]["up"] is False
            store.up = True
            await _until(chan, "SERVING")
            assert (await stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi"), timeout=2)).request_id == "done"
    finally:
        await server.stop()


async def test_optional_store_down_is_reported_not_fatal() -> None:
    store = Flaky()
    server = GrpcServer(StoreApp(store, required=False), settings(), FAST)
    await server.start()
    try:
        store.up = False
        await asyncio.sleep(0.3)
        assert server.state == "SERVING"
        assert server.watcher is not None and server.watcher.snapshot()["mongodb"]["up"] is False
    finally:
        await server.stop()


async def test_start_waits_for_its_store_instead_of_exiting() -> None:
    app = StoreApp(Flaky(), required=True, fail_starts=3)
    server = GrpcServer(app, settings(), FAST)
    start = asyncio.create_task(server.start())
    for _ in range(100):
        if server.port:
            break
        await asyncio.sleep(0.01)
    async with channel(f"127.0.0.1:{server.port}") as chan:
        stub = emotion_pb2_grpc.EmotionServiceStub(chan)
        await asyncio.wait_for(app.second_start.wait(), 5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi"), timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == "scripted is starting: waiting for mongodb"
        await asyncio.wait_for(start, 5)
        assert app.starts == 4 and app.stops == 3  # each failed attempt released what it opened
        assert await status(chan, SERVICE) == "SERVING"
    await server.stop()


def test_channels_keepalive_is_what_servers_permit_and_backoff_is_capped() -> None:
    opts = dict(channel_options(ReliabilitySettings()))
    assert opts["grpc.max_reconnect_backoff_ms"] <= 1000
    assert opts["grpc.keepalive_permit_without_calls"] == 1
    # servers accept pings down to half the client's interval (server.py), so no GOAWAY too_many_pings
    assert opts["grpc.keepalive_time_ms"] >= ReliabilitySettings().keepalive_seconds * 1000
