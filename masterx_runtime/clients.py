"""Client-side helpers: channels to peer services, request-id propagation, readiness waits."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from masterx_runtime import tracing
from masterx_runtime.config import load
from masterx_runtime.interceptors import REQUEST_ID_KEY
from masterx_runtime.logs import request_id_var
from masterx_runtime.settings import ReliabilitySettings


class _RequestIdClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Forward the current request id so one chat turn is traceable across services."""

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        rid = request_id_var.get()
        if not rid:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if REQUEST_ID_KEY not in metadata:
            metadata.add(REQUEST_ID_KEY, rid)
        return details._replace(metadata=metadata)  # type: ignore[attr-defined]

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(details), request_iterator)

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


@functools.cache
def _reliability() -> ReliabilitySettings:
    return load(ReliabilitySettings)


def channel_options(cfg: ReliabilitySettings | None = None) -> list[tuple[str, int]]:
    """Keepalive the servers accept (they permit pings down to half this interval, see server.py)
    and a capped reconnect backoff, so a restarted peer is used again within about a second."""
    cfg = cfg or _reliability()
    keepalive_ms = int(cfg.keepalive_seconds * 1000)
    return [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", min(10_000, keepalive_ms)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", min(100, cfg.reconnect_backoff_max_ms)),
        ("grpc.min_reconnect_backoff_ms", min(100, cfg.reconnect_backoff_max_ms)),
        ("grpc.max_reconnect_backoff_ms", cfg.reconnect_backoff_max_ms),
    ]


def channel(address: str, *, max_message_bytes: int = 4 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure aio channel to a peer with keepalive, capped reconnect backoff and request-id propagation."""
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            *channel_options(),
        ],
        interceptors=[*tracing.client_interceptors(), _RequestIdClientInterceptor()],
    )


async def health_status(chan: grpc.aio.Channel, service: str = "", timeout: float = 2.0) -> str:
    """The peer's health status name for ``service`` ("SERVING", "NOT_SERVING", "UNREACHABLE", ...)."""
    stub = health_pb2_grpc.HealthStub(chan)
    try:
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.aio.AioRpcError as err:
        return "UNKNOWN_SERVICE" if err.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


async def wait_until_serving(address: str, service: str = "", timeout: float = 30.0) -> None:
    """Poll a peer's health until SERVING; raise TimeoutError with the last status otherwise."""
    deadline = time.monotonic() + timeout
    last = "UNREACHABLE"
    async with channel(address) as chan:
        while time.monotonic() < deadline:
            last = await health_status(chan, service, timeout=1.0)
            if last == "SERVING":
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{address} {service or '(overall)'} not SERVING after {timeout:.0f}s (last: {last})")
