"""Run the whole system on one machine: Redis, a MongoDB-wire server and all five services.

:class:`LocalSystem` is used by ``masterx up`` and by the end-to-end tests. Every child runs
in its own process group with its log in ``<state>/logs``; ``stop()`` sends SIGTERM (the
services drain), then SIGKILL after a timeout, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from masterx_runtime.clients import wait_until_serving
from masterx_runtime.testing import servers


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    grpc_service: str  # full gRPC service name; "" for the HTTP gateway
    port: int
    metrics_port: int


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("emotion", "masterx.emotion.v1.EmotionService", 50051, 9101),
    ServiceSpec("reasoning", "masterx.reasoning.v1.ReasoningService", 50052, 9102),
    ServiceSpec("router", "masterx.router.v1.RouterService", 50053, 9103),
    ServiceSpec("benchmark", "masterx.benchmark.v1.BenchmarkService", 50054, 9104),
    ServiceSpec("gateway", "", 8080, 0),
)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pick(port: int, fixed: bool) -> int:
    return port if fixed and _port_free(port) else servers.free_port()


@dataclass
class LocalSystem:
    """All services as child processes. ``fixed_ports`` uses the well-known ports when free."""

    state_dir: Path = Path(".masterx")
    fixed_ports: bool = True
    env: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = tuple(s.name for s in SERVICES)
    python: str = sys.executable
    ports: dict[str, int] = field(default_factory=dict)
    children: dict[str, servers.ManagedProcess] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def _start_stores(self) -> None:
        merged = {**os.environ, **self.env}
        if not merged.get("REDIS_URL"):
            port = _pick(6379, self.fixed_ports)
            r = servers.start_redis(port, datadir=self.state_dir / "redis", log=self.logs / "redis.log")
            self.children["redis"] = r
            self.base_env["REDIS_URL"] = r.url
        if not merged.get("MONGO_URL"):
            port = _pick(27017, self.fixed_ports)
            m = servers.start_mongo(port, datadir=self.state_dir / "mongo", log=self.logs / "mongo.log")
            self.children["mongodb"] = m
            self.base_env["MONGO_URL"] = m.url

    def _service_env(self, spec: ServiceSpec) -> dict[str, str]:
        env = {**os.environ, **self.base_env, **self.env}
        env.setdefault("MASTERX_LOG_FORMAT", "json")
        env["PYTHONUNBUFFERED"] = "1"
        if spec.name == "gateway":
            env["GATEWAY_PORT"] = str(self.ports["gateway"])
        else:
            env["MASTERX_GRPC_PORT"] = str(self.ports[spec.name])
            env["MASTERX_METRICS_PORT"] = str(self.ports[f"{spec.name}-metrics"])
        return env

    def start(self, timeout: float = 120.0) -> None:
        """Start stores and services and wait until every service is healthy."""
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._start_stores()
            for spec in SERVICES:
                self.ports[spec.name] = _pick(spec.port, self.fixed_ports)
                if spec.metrics_port:
                    self.ports[f"{spec.name}-metrics"] = _pick(spec.metrics_port, self.fixed_ports)
            for spec in SERVICES:
                if spec.name != "gateway":
                    self.base_env[f"{spec.name.upper()}_ADDR"] = f"127.0.0.1:{self.ports[spec.name]}"
            for spec in SERVICES:
                if spec.name in self.services:
                    self._spawn(spec)
            asyncio.run(self._wait_healthy(timeout))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, spec: ServiceSpec) -> None:
        log = open(self.logs / f"{spec.name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [self.python, "-m", f"services.{spec.name}"],
            env=self._service_env(spec),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = (
            f"http://127.0.0.1:{self.ports[spec.name]}"
            if spec.name == "gateway"
            else f"127.0.0.1:{self.ports[spec.name]}"
        )
        self.children[spec.name] = servers.ManagedProcess(spec.name, url, proc)

    async def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout

        async def one(spec: ServiceSpec) -> None:
            child = self.children[spec.name]
            while True:
                if child.proc.poll() is not None:
                    tail = (self.logs / f"{spec.name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{spec.name} exited with code {child.proc.returncode}:\n{tail}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{spec.name} not healthy after {timeout:.0f}s (log: {self.logs / spec.name}.log)"
                    )
                try:
                    if spec.grpc_service:
                        await wait_until_serving(child.url, spec.grpc_service, timeout=min(2.0, left))
                    else:
                        async with httpx.AsyncClient() as client:
                            r = await client.get(f"{child.url}/healthz", timeout=1.0)
                            r.raise_for_status()
                    return
                except (TimeoutError, httpx.HTTPError):
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(one(s) for s in SERVICES if s.name in self.services))

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM services (they drain), then the stores; SIGKILL whatever lingers."""
        order = [n for n in reversed([s.name for s in SERVICES]) if n in self.children]
        for name in order:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.children[name].proc.pid, signal.SIGTERM)
        for name in order:
            self.children.pop(name).stop(timeout)
        for name in ("redis", "mongodb"):
            if name in self.children:
                self.children.pop(name).stop(timeout)

    def dead(self) -> list[str]:
        return [n for n, c in self.children.items() if c.proc.poll() is not None]

    def describe(self) -> str:
        rows = [("service", "address", "health / docs")]
        for spec in SERVICES:
            if spec.name not in self.children:
                continue
            if spec.grpc_service:
                addr = f"127.0.0.1:{self.ports[spec.name]}"
                rows.append(
                    (spec.name, f"grpc {addr}", f"http://127.0.0.1:{self.ports[spec.name + '-metrics']}/health")
                )
            else:
                url = self.children[spec.name].url
                rows.append((spec.name, url, f"{url}/docs  (tutor page: {url}/)"))
        for store in ("redis", "mongodb"):
            if store in self.children:
                rows.append((store, self.children[store].url, "started by masterx up"))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) for r in rows)


def up(state_dir: Path = Path(".masterx")) -> int:
    """Foreground run for ``masterx up``: start, print where things are, stop on Ctrl-C."""
    system = LocalSystem(state_dir=state_dir)
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    print("starting MasterX (logs in", system.logs, ") ...", flush=True)
    try:
        system.start()
    except KeyboardInterrupt:
        print("interrupted; stopped everything")
        return 130
    except Exception as exc:
        print(f"failed to start: {exc}", file=sys.stderr)
        return 1
    print("\nMasterX is up:\n" + system.describe())
    print(f"\ngrpcurl example: .venv/bin/grpcurl -plaintext 127.0.0.1:{system.ports['emotion']} list")
    print("Press Ctrl-C to stop.", flush=True)
    code = 0
    try:
        while not stop:
            time.sleep(0.5)
            if dead := system.dead():
                print(f"stopped unexpectedly: {', '.join(dead)} (see {system.logs})", file=sys.stderr)
                code = 1
                break
    except KeyboardInterrupt:
        pass
    print("\nstopping ...", flush=True)
    system.stop()
    print("stopped; nothing left running.")
    return code
