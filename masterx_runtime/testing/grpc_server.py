"""Run a ServiceApp in-process on a free port, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import grpc

from masterx.common.v1 import common_pb2
from masterx_runtime.clients import channel
from masterx_runtime.errors import ERROR_DETAIL_KEY
from masterx_runtime.server import GrpcServer, ServiceApp
from masterx_runtime.settings import ServerSettings


@contextlib.asynccontextmanager
async def serving(
    app: ServiceApp, *, grace: float = 1.0, metrics: bool = False, **overrides: object
) -> AsyncIterator[tuple[GrpcServer, grpc.aio.Channel]]:
    """Start ``app`` on 127.0.0.1 (free port unless ``grpc_port`` is given); yield the server and a channel."""
    values: dict[str, object] = {
        "grpc_port": 0,
        "metrics_port": 0 if metrics else -1,
        "shutdown_grace_seconds": grace,
        **overrides,
    }
    settings = dataclasses.replace(ServerSettings(), **values)  # type: ignore[arg-type]
    server = GrpcServer(app, settings)
    await server.start()
    try:
        async with channel(f"127.0.0.1:{server.port}") as chan:
            yield server, chan
    finally:
        await server.stop()


def rpc_error(
    code: grpc.StatusCode, details: str, detail: common_pb2.ErrorDetail | None = None
) -> grpc.aio.AioRpcError:
    """The error a failed call raises on the client: ``code`` and ``details``, with ``detail`` in
    the trailing metadata when given."""
    trailing = grpc.aio.Metadata()
    if detail is not None:
        trailing.add(ERROR_DETAIL_KEY, detail.SerializeToString())
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=details)
