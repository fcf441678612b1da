"""Run a ServiceApp in-process on a free port, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import grpc

from masterx_runtime.clients import channel
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
