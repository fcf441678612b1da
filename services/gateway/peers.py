"""The gateway's channels and stubs to the four services, plus their readiness checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from masterx.benchmark.v1 import benchmark_pb2_grpc
from masterx.emotion.v1 import emotion_pb2_grpc
from masterx.reasoning.v1 import reasoning_pb2_grpc
from masterx.router.v1 import router_pb2_grpc
from masterx_runtime.clients import channel, health_status
from masterx_runtime.settings import PeerSettings
from masterx_runtime.topology import GRPC_SERVICES
from services.gateway.errors import from_rpc_error

T = TypeVar("T")

#: Short service name -> fully qualified gRPC service name checked by /readyz (from the service table).
SERVICE_NAMES: dict[str, str] = {s.name: s.grpc_service for s in GRPC_SERVICES}


@dataclass
class Peers:
    """One long-lived channel per service (HTTP/2 multiplexes every request over it)."""

    channels: dict[str, grpc.aio.Channel]

    @classmethod
    def connect(cls, cfg: PeerSettings) -> Peers:
        return cls({name: channel(cfg.addr(name)) for name in SERVICE_NAMES})

    def __post_init__(self) -> None:
        self.emotion = emotion_pb2_grpc.EmotionServiceStub(self.channels["emotion"])
        self.reasoning = reasoning_pb2_grpc.ReasoningServiceStub(self.channels["reasoning"])
        self.router = router_pb2_grpc.RouterServiceStub(self.channels["router"])
        self.benchmark = benchmark_pb2_grpc.BenchmarkServiceStub(self.channels["benchmark"])

    async def health(self, timeout: float) -> dict[str, str]:
        """Health status name of every service, checked concurrently."""
        names = list(SERVICE_NAMES)
        results = await asyncio.gather(
            *(health_status(self.channels[n], SERVICE_NAMES[n], timeout=timeout) for n in names)
        )
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels.values()), return_exceptions=True)


async def rpc(service: str, call: Awaitable[T]) -> T:
    """Await a unary call; a failure becomes the HTTP error naming ``service``."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc, service) from None
