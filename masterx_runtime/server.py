"""The gRPC server bootstrap every MasterX service runs on.

A service implements :class:`ServiceApp` (what it registers, how it becomes ready, how it
stops); :class:`GrpcServer` adds health, reflection, interceptors and metrics around it, and
:func:`main` is the process entry point (config errors -> readable message, exit code 2;
SIGTERM/SIGINT -> NOT_SERVING, drain in-flight calls within the grace period, exit 0).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from masterx_runtime import gctuning, logs, metrics, outbox, topology, tracing
from masterx_runtime.config import ConfigError, load
from masterx_runtime.errors import Unavailable
from masterx_runtime.interceptors import default_interceptors
from masterx_runtime.readiness import Dependency, StoreWatcher
from masterx_runtime.settings import ReliabilitySettings, ServerSettings
from masterx_runtime.tasks import stop_tasks

log = logging.getLogger("masterx.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServiceApp(abc.ABC):
    """One deployable service: its servicers plus its start/stop lifecycle.

    A subclass whose ``name`` is a row of :data:`masterx_runtime.topology.SERVICES` gets
    ``service_names`` and the default ports from that table unless it sets them itself.
    """

    #: Short name used in logs, metrics and process names, e.g. "emotion".
    name: ClassVar[str]
    #: Fully qualified gRPC service names, e.g. ("masterx.emotion.v1.EmotionService",).
    service_names: ClassVar[tuple[str, ...]]
    default_grpc_port: ClassVar[int]
    default_metrics_port: ClassVar[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        row = topology.BY_NAME.get(cls.__dict__.get("name", ""))
        if row is None:
            return
        defaults = {
            "service_names": (row.grpc_service,),
            "default_grpc_port": row.port,
            "default_metrics_port": row.metrics_port,
        }
        for attr, value in defaults.items():
            if not hasattr(cls, attr):
                setattr(cls, attr, value)

    @abc.abstractmethod
    def register(self, server: grpc.aio.Server) -> None:
        """Add this service's servicers to ``server``."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Become ready (load models, connect stores, warm up). Health is SERVING only after this."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release resources after the server has drained."""

    def health_details(self) -> Mapping[str, Any]:
        """Extra facts for the JSON health endpoint (e.g. the execution provider in use)."""
        return {}

    def dependencies(self) -> Sequence[Dependency]:
        """The stores this service uses, called after :meth:`start`; a required one that is down
        makes the service NOT_SERVING until it is back, an optional one is only reported."""
        return ()


class GrpcServer:
    """Runs a :class:`ServiceApp` on a ``grpc.aio`` server with health, reflection and metrics."""

    def __init__(
        self, app: ServiceApp, settings: ServerSettings, reliability: ReliabilitySettings | None = None
    ) -> None:
        self.app = app
        self.settings = settings
        self.reliability = reliability if reliability is not None else load(ReliabilitySettings)
        self.watcher: StoreWatcher | None = None
        self._waiting_for = ""
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.metrics_port = 0
        self._state = "STARTING"
        self._server: grpc.aio.Server | None = None
        self._metrics: metrics.MetricsServer | None = None
        self._stopping: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        return self._state

    def not_ready_reason(self) -> str:
        """'' while SERVING, else why calls are refused (the readiness interceptor's message)."""
        name = self.app.name
        if self._state == "SERVING":
            return ""
        if self._state == "STARTING":
            return f"{name} is starting" + (f": waiting for {self._waiting_for}" if self._waiting_for else "")
        if self._state == "NOT_SERVING" and self.watcher is not None:
            return f"{name} is not serving: {', '.join(self.watcher.down_required()) or 'a store'} is down"
        return f"{name} is {self._state.lower()}"

    async def _apply_stores(self) -> None:
        """SERVING unless a required store is down (called by the store watcher on every change)."""
        if self._state not in ("SERVING", "NOT_SERVING") or self.watcher is None:
            return
        down = self.watcher.down_required()
        state = "NOT_SERVING" if down else "SERVING"
        if state != self._state:
            self._state = state
            await self._set_all(SERVING if state == "SERVING" else NOT_SERVING)
            if down:
                log.warning("not serving: required store down", extra={"stores": down})
            else:
                log.info("serving again: required stores are back")

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *self.app.service_names):
            await self.health.set(name, status)
        metrics.SERVING.labels(self.app.name).set(1 if status == SERVING else 0)

    def _health_json(self) -> dict[str, Any]:
        details: dict[str, Any] = {"service": self.app.name, "status": self._state}
        if self._state != "SERVING":
            details["reason"] = self.not_ready_reason()
        if self.watcher is not None and self.watcher.deps:
            details["stores"] = self.watcher.snapshot()
        if boxes := outbox.snapshot():
            details["outboxes"] = boxes
        return {**details, **self.app.health_details()}

    async def _start_app(self) -> None:
        """Run the app's start; while a store it needs is not up yet (Unavailable), release what
        the attempt opened, wait (capped backoff) and try again, NOT_SERVING meanwhile."""
        delay, attempt = 0.2, 0
        while True:
            try:
                await self.app.start()
                self._waiting_for = ""
                return
            except Unavailable as exc:
                attempt += 1
                self._waiting_for = exc.dependency or "a dependency"
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(
                        "waiting for a store before serving",
                        extra={"dependency": self._waiting_for, "attempt": attempt, "error": exc.message[:300]},
                    )
                await self.app.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reliability.start_retry_max_seconds)

    async def start(self) -> int:
        """Bind and start serving NOT_SERVING, run the app's start, then report SERVING."""
        s = self.settings
        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Accept the keepalive pings our client channels send (idle connections too), so a
            # client never gets GOAWAY too_many_pings.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", int(self.reliability.keepalive_seconds * 500)),
            ("grpc.http2.max_ping_strikes", 0),
        ]
        if s.max_connection_age_seconds > 0:
            options += [
                ("grpc.max_connection_age_ms", int(s.max_connection_age_seconds * 1000)),
                ("grpc.max_connection_age_grace_ms", int(max(s.shutdown_grace_seconds, 5) * 1000)),
            ]
        server = grpc.aio.server(
            interceptors=[*tracing.server_interceptors(), *default_interceptors(self.app.name, self.not_ready_reason)],
            options=options,
            maximum_concurrent_rpcs=s.max_concurrent_rpcs or None,
        )
        self._server = server
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        await self._set_all(NOT_SERVING)
        self.app.register(server)
        reflection.enable_server_reflection(
            (*self.app.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = server.add_insecure_port(f"{s.host}:{s.grpc_port}")
        if self.port == 0:
            raise OSError(f"could not bind gRPC port {s.host}:{s.grpc_port}")
        await server.start()
        if s.metrics_port >= 0:
            self._metrics = metrics.MetricsServer(s.host, s.metrics_port, self._health_json)
            self.metrics_port = await self._metrics.start()
        log.info("listening", extra={"grpc_port": self.port, "metrics_port": self.metrics_port})
        started = time.perf_counter()
        await self._start_app()
        self.watcher = StoreWatcher(
            self.app.name,
            self.app.dependencies(),
            interval=self.reliability.store_check_seconds,
            on_change=self._apply_stores,
        )
        await self.watcher.check()
        self._state = "NOT_SERVING" if self.watcher.down_required() else "SERVING"
        await self._set_all(SERVING if self._state == "SERVING" else NOT_SERVING)
        self.watcher.start()
        log.info(
            "serving",
            extra={"startup_ms": round((time.perf_counter() - started) * 1000, 1), **self.app.health_details()},
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first (so load balancers stop sending), then drain, then app.stop()."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._state = "DRAINING"
        await self._set_all(NOT_SERVING)
        if self.watcher is not None:
            await stop_tasks([self.watcher.task])
        log.info("draining", extra={"grace_s": grace})
        if self._server is not None:
            await self._server.stop(grace)
        try:
            await self.app.stop()
        finally:
            if self._metrics is not None:
                await self._metrics.stop()
            self._state = "STOPPED"
            log.info("stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(app: ServiceApp, settings: ServerSettings) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    server = GrpcServer(app, settings)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    start_task = asyncio.ensure_future(server.start())
    waiter = asyncio.ensure_future(stop_requested.wait())
    done, _ = await asyncio.wait({start_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if start_task in done:
        if start_task.exception() is not None:
            # Release what the failed start opened (store clients) while the loop still runs:
            # otherwise their cleanup runs after asyncio.run closed it ("Event loop is closed").
            with contextlib.suppress(Exception):
                await server.stop(grace=0)
            tracing.shutdown()
            start_task.result()  # re-raise startup failures
        # Started (model, stores, caches built): freeze that and set the collector's threshold.
        gctuning.apply(settings.gc_threshold, settings.gc_freeze)
        await waiter
    else:
        start_task.cancel()
        await asyncio.gather(start_task, return_exceptions=True)
    log.info("signal received, shutting down")
    try:
        await server.stop()
    finally:
        tracing.shutdown()


def use_event_loop(choice: str) -> str:
    """Install the event loop policy ``MASTERX_EVENT_LOOP`` asks for; returns the loop in use."""
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(["MASTERX_EVENT_LOOP=uvloop but uvloop is not installed"]) from None
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main(factory: Callable[[], ServiceApp], app_cls: type[ServiceApp]) -> None:
    """Process entry point used by ``python -m services.<name>``."""
    try:
        settings = load(
            ServerSettings,
            grpc_port=app_cls.default_grpc_port,
            metrics_port=app_cls.default_metrics_port,
        )
    except ConfigError as exc:
        print(f"{app_cls.name}: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure(settings.log_level, settings.log_format, app_cls.name)
    try:
        tracing.setup(app_cls.name)
        app = factory()
    except ConfigError as exc:
        print(f"{app_cls.name}: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        use_event_loop(settings.event_loop)
        asyncio.run(serve(app, settings))
    except ConfigError as exc:  # found while starting (e.g. a model that does not fit the code)
        print(f"{app_cls.name}: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(1)
