"""Run the whole system on one machine: Redis, a MongoDB-wire server and all five services.

:class:`LocalSystem` is used by ``masterx up`` and by the end-to-end tests. Every child runs
in its own process group with its log in ``<state>/logs``; ``stop()`` sends SIGTERM (the
services drain), then SIGKILL after a timeout, so nothing is left running.

``masterx up`` supervises: a child that exits (a store or a service, crash or kill) is started
again on the same port after a backoff (0.5 s doubling to 10 s; back to 0.5 s once it has run
30 s), and each restart is printed. Only Ctrl-C / SIGTERM stop everything. Services wait for their
stores at start (NOT_SERVING meanwhile), so the order of restarts does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from masterx_runtime.topology import SERVICES, ServiceSpec

#: Restart backoff of a supervised child: first wait, cap, and how long a run must last to reset it.
RESTART_FIRST_S, RESTART_MAX_S, RESTART_RESET_AFTER_S = 0.5, 10.0, 30.0
STORES = ("redis", "mongodb")


__all__ = ["SERVICES", "LocalSystem", "ServiceSpec", "up"]  # the service table lives in masterx_runtime.topology


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
    #: Supervision: restarts per child, consecutive restarts (backoff), when each child started.
    restarts: dict[str, int] = field(default_factory=dict)
    _streak: dict[str, int] = field(default_factory=dict)
    _started_at: dict[str, float] = field(default_factory=dict)
    _died_at: dict[str, float] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def _start_stores(self) -> None:
        merged = {**os.environ, **self.env}
        self.base_env.setdefault("MASTERX_DATA_DIR", str((self.state_dir / "data").resolve()))
        if not merged.get("REDIS_URL"):
            self.ports["redis"] = _pick(6379, self.fixed_ports)
            self._start_store("redis")
            self.base_env["REDIS_URL"] = self.children["redis"].url
        if not merged.get("MONGO_URL"):
            self.ports["mongodb"] = _pick(27017, self.fixed_ports)
            self._start_store("mongodb")
            self.base_env["MONGO_URL"] = self.children["mongodb"].url

    def _start_store(self, name: str) -> None:
        """Start (or restart, same port and data) one of the stores ``masterx up`` runs itself."""
        port = self.ports[name]
        if name == "redis":
            child = servers.start_redis(port, datadir=self.state_dir / "redis", log=self.logs / "redis.log")
        else:
            child = servers.start_mongo(port, datadir=self.state_dir / "mongo", log=self.logs / "mongo.log")
        self.children[name] = child
        self._started_at[name] = time.monotonic()
        self._write_pids()

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
                if spec.addr_env:
                    self.base_env[spec.addr_env] = f"127.0.0.1:{self.ports[spec.name]}"
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
        self._started_at[spec.name] = time.monotonic()
        self._write_pids()

    def _write_pids(self) -> None:
        """``<state>/pids.json``: the current process id of every child (operators, fault tests)."""
        pids = {name: child.proc.pid for name, child in self.children.items()}
        tmp = self.state_dir / "pids.json.tmp"
        tmp.write_text(json.dumps(pids))
        tmp.replace(self.state_dir / "pids.json")

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

    def restart_delay(self, name: str) -> float:
        """Backoff before the next restart of ``name`` (doubles per consecutive restart, capped)."""
        return float(min(RESTART_FIRST_S * 2 ** self._streak.get(name, 0), RESTART_MAX_S))

    def supervise(self) -> list[str]:
        """Restart children that exited, once their backoff has passed; returns what happened (to print)."""
        events: list[str] = []
        now = time.monotonic()
        for name in self.dead():
            child = self.children[name]
            if name not in self._died_at:
                self._died_at[name] = now
                ran = now - self._started_at.get(name, now)
                if ran >= RESTART_RESET_AFTER_S:
                    self._streak[name] = 0
                delay = self.restart_delay(name)
                events.append(f"{name} exited (code {child.proc.returncode}); restarting in {delay:.1f}s")
                continue
            if now - self._died_at[name] < self.restart_delay(name):
                continue
            try:
                if name in STORES:
                    self._start_store(name)
                else:
                    self._spawn(next(s for s in SERVICES if s.name == name))
            except Exception as exc:  # e.g. the port is briefly still taken: try again after more backoff
                self._streak[name] = self._streak.get(name, 0) + 1
                self._died_at[name] = now
                events.append(f"{name} could not be restarted ({exc}); retrying in {self.restart_delay(name):.1f}s")
                continue
            del self._died_at[name]
            self._streak[name] = self._streak.get(name, 0) + 1
            self.restarts[name] = self.restarts.get(name, 0) + 1
            log = self.logs / f"{ {'mongodb': 'mongo'}.get(name, name) }.log"
            events.append(f"{name} restarted (restart #{self.restarts[name]}; log {log})")
        return events

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


def up(state_dir: Path = Path(".masterx"), *, fixed_ports: bool = True) -> int:
    """Foreground run for ``masterx up``: start, print where things are, restart what exits, stop on Ctrl-C."""
    system = LocalSystem(state_dir=state_dir, fixed_ports=fixed_ports)
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
    try:
        while not stop:
            time.sleep(0.2)
            for event in system.supervise():
                print(event, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    print("\nstopping ...", flush=True)
    system.stop()
    print("stopped; nothing left running.")
    return 0
