"""The one table of MasterX's services: name, gRPC service name, default ports, address variable.

Everything that needs to know which services exist reads this table: the launcher (``masterx
up``), :class:`~masterx_runtime.settings.PeerSettings` (the ``*_ADDR`` variables and their
defaults), :class:`~masterx_runtime.server.ServiceApp` (each app's gRPC name and default ports,
so ``python -m services.<name>`` listens where the table says) and the gateway's peers. Adding a
service or moving a port is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    """One deployable service."""

    name: str
    #: Fully qualified gRPC service name; "" for the HTTP gateway.
    grpc_service: str
    #: Default port: gRPC for the services, HTTP for the gateway.
    port: int
    #: Default port of the ``/metrics`` + ``/health`` endpoint (0 = none: the gateway serves them itself).
    metrics_port: int
    #: Environment variable holding the ``host:port`` peers dial ("" = not dialled over gRPC).
    addr_env: str

    @property
    def default_addr(self) -> str:
        return f"127.0.0.1:{self.port}"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("emotion", "masterx.emotion.v1.EmotionService", 50051, 9101, "EMOTION_ADDR"),
    ServiceSpec("reasoning", "masterx.reasoning.v1.ReasoningService", 50052, 9102, "REASONING_ADDR"),
    ServiceSpec("router", "masterx.router.v1.RouterService", 50053, 9103, "ROUTER_ADDR"),
    ServiceSpec("benchmark", "masterx.benchmark.v1.BenchmarkService", 50054, 9104, "BENCHMARK_ADDR"),
    ServiceSpec("gateway", "", 8080, 0, ""),
)

BY_NAME: dict[str, ServiceSpec] = {s.name: s for s in SERVICES}

#: The gRPC services (everything but the gateway), in table order.
GRPC_SERVICES: tuple[ServiceSpec, ...] = tuple(s for s in SERVICES if s.grpc_service)


def spec(name: str) -> ServiceSpec:
    """The row of service ``name``; KeyError naming the known services otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(BY_NAME)}") from None
