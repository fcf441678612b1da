"""Client-side helpers: channels to peer services, request-id propagation, readiness waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from masterx_runtime.interceptors import REQUEST_ID_KEY
from masterx_runtime.logs import request_id_var


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


def channel(address: str, *, max_message_bytes: int = 4 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure aio channel to a peer with keepalive and request-id propagation."""
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
        interceptors=[_RequestIdClientInterceptor()],
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
