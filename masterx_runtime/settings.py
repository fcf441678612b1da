"""Settings every service shares: its gRPC server, logging, and where its peers are."""

from __future__ import annotations

from typing import Any

from masterx_runtime import topology
from masterx_runtime.config import env, settings


@settings("runtime")
class ServerSettings:
    """How a service's gRPC server listens and shuts down (same names in every service)."""

    host: str = env("MASTERX_GRPC_HOST", "127.0.0.1", "Address the gRPC server binds to (`0.0.0.0` in containers).")
    grpc_port: int = env(
        "MASTERX_GRPC_PORT",
        0,
        "gRPC port (0 = any free port). Defaults per service: "
        + ", ".join(f"{s.name} {s.port}" for s in topology.GRPC_SERVICES)
        + ".",
        minimum=0,
        maximum=65535,
    )
    metrics_port: int = env(
        "MASTERX_METRICS_PORT",
        0,
        "Port of the HTTP endpoint serving `/metrics` (Prometheus) and `/health` (JSON details). "
        "Defaults per service: 9101-9104; `0` = any free port, `-1` disables it.",
        minimum=-1,
        maximum=65535,
    )
    shutdown_grace_seconds: float = env(
        "MASTERX_SHUTDOWN_GRACE_SECONDS",
        10.0,
        "On SIGTERM, in-flight calls get this long to finish before they are cancelled.",
        minimum=0,
        maximum=600,
    )
    max_message_bytes: int = env(
        "MASTERX_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, "Largest gRPC message accepted or sent.", minimum=1024
    )
    max_concurrent_rpcs: int = env(
        "MASTERX_MAX_CONCURRENT_RPCS",
        0,
        "Concurrent RPCs before new ones get RESOURCE_EXHAUSTED (0 = unlimited).",
        minimum=0,
    )
    max_connection_age_seconds: float = env(
        "MASTERX_MAX_CONNECTION_AGE_SECONDS",
        300.0,
        "Clients are asked to reconnect after this long (GOAWAY), so load spreads over new replicas (0 = never).",
        minimum=0,
    )
    event_loop: str = env(
        "MASTERX_EVENT_LOOP",
        "auto",
        "Event loop of a gRPC service process: `uvloop` (libuv; measured 9-12% less CPU per request in the router "
        "and the emotion service), `asyncio` (the standard library's), or `auto` (uvloop when installed).",
        choices=("auto", "asyncio", "uvloop"),
    )
    log_level: str = env("MASTERX_LOG_LEVEL", "INFO", "Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = env(
        "MASTERX_LOG_FORMAT", "json", "`json` (one object per line) or `text`.", choices=("json", "text")
    )
    gc_threshold: int = env(
        "MASTERX_GC_THRESHOLD",
        10_000,
        "Net new container objects between two young-generation passes of Python's cyclic garbage "
        "collector (Python's default is 700; 0 keeps it). `bench/bench_gc.py`, 64 clients: with 700 the "
        "collector took 0.27-0.29 ms of the gateway's and 0.15-0.17 ms of the router's CPU per request, "
        "with 10000 (and the freeze) 0.01 ms.",
        minimum=0,
    )
    gc_freeze: bool = env(
        "MASTERX_GC_FREEZE",
        True,
        "Move what is alive once the service is built (modules, app, configuration) out of the "
        "collector's sight (`gc.freeze`), so a full collection scans only what requests created.",
    )


def _peer_addr(name: str) -> Any:
    """The address setting of peer ``name``: variable and default from the service table."""
    row = topology.spec(name)
    return env(row.addr_env, row.default_addr, f"host:port of the {name} service.")


@settings("peers")
class PeerSettings:
    """Where the other services listen, for services and the gateway that call them."""

    emotion_addr: str = _peer_addr("emotion")
    reasoning_addr: str = _peer_addr("reasoning")
    router_addr: str = _peer_addr("router")
    benchmark_addr: str = _peer_addr("benchmark")
    rpc_timeout_seconds: float = env(
        "MASTERX_RPC_TIMEOUT_SECONDS", 30.0, "Default deadline for calls to peer services.", minimum=0.01
    )

    def addr(self, name: str) -> str:
        """host:port of peer ``name`` (a gRPC service of :data:`masterx_runtime.topology.SERVICES`)."""
        row = topology.spec(name)
        if not row.addr_env:
            raise KeyError(f"{name} is not dialled over gRPC (no address variable)")
        value: str = getattr(self, f"{row.name}_addr")
        return value


@settings("runtime")
class TracingSettings:
    """OpenTelemetry tracing (standard OTel names; the SDK reads the other OTEL_* variables itself)."""

    otlp_endpoint: str = env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "",
        "OTLP/gRPC collector (e.g. `http://127.0.0.1:4317`): set = every service and the gateway export "
        "spans there and log `trace_id`; empty = tracing off (no tracer, exporter or interceptor is loaded).",
    )
    otlp_traces_endpoint: str = env(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", "Collector for traces only; wins over OTEL_EXPORTER_OTLP_ENDPOINT."
    )
    otlp_protocol: str = env(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTLP transport; only `grpc` is shipped.", choices=("grpc",)
    )
    service_name: str = env(
        "OTEL_SERVICE_NAME", "", "`service.name` of the spans (empty = `masterx-<service>`, e.g. `masterx-router`)."
    )
    sdk_disabled: bool = env("OTEL_SDK_DISABLED", False, "Turn tracing off even when an endpoint is set.")


@settings("reliability")
class ReliabilitySettings:
    """Outboxes (writes kept on local disk while a store is down), store watching, channel tuning."""

    data_dir: str = env(
        "MASTERX_DATA_DIR",
        "",
        "Folder for local durable state: the outboxes' SQLite files (empty = `<tmp>/masterx-outbox`). "
        "Mount a volume here so writes queued during a store outage survive a restart.",
    )
    outbox_max_entries: int = env(
        "MASTERX_OUTBOX_MAX_ENTRIES",
        200_000,
        "Most writes one outbox keeps while its store is down; beyond it new writes are dropped (counted, logged).",
        minimum=1,
    )
    outbox_batch: int = env(
        "MASTERX_OUTBOX_BATCH", 200, "Writes replayed per store call when a store is back.", minimum=1
    )
    outbox_retry_max_seconds: float = env(
        "MASTERX_OUTBOX_RETRY_MAX_SECONDS",
        1.0,
        "Longest wait between replay attempts while the store is down (starts at 0.1 s, doubles).",
        minimum=0.01,
    )
    store_check_seconds: float = env(
        "MASTERX_STORE_CHECK_SECONDS",
        1.0,
        "How often each service pings the stores it uses (health NOT_SERVING while a required one is down).",
        minimum=0.05,
    )
    start_retry_max_seconds: float = env(
        "MASTERX_START_RETRY_MAX_SECONDS",
        5.0,
        "At start, longest wait between attempts to reach a store that is not up yet (NOT_SERVING meanwhile).",
        minimum=0.05,
    )
    keepalive_seconds: float = env(
        "MASTERX_KEEPALIVE_SECONDS",
        30.0,
        "Client channels ping an idle connection this often (servers accept pings down to half of it).",
        minimum=1,
    )
    reconnect_backoff_max_ms: int = env(
        "MASTERX_RECONNECT_BACKOFF_MAX_MS",
        1000,
        "Longest wait of a client channel between reconnect attempts, so a restarted peer is used quickly.",
        minimum=100,
    )
