"""Fault-injection harness: the system as processes, load through real gRPC clients, loss accounting.

A :class:`Load` drives chats (router Generate), emotion analyses with a student id (history
entries) and optionally one benchmark run while a test kills and restarts things. Afterwards
:func:`account` counts what MongoDB holds against what the clients were told succeeded, per store,
and :func:`report` prints it. A request the client saw succeed but whose record is missing is a
*silent loss*; the tests fail on any.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from pymongo import MongoClient

from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc
from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.clients import channel, health_status
from masterx_runtime.launcher import LocalSystem
from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior
from tests.gateway.system import emotion_model_dir

CHAT_USER = "fault-chat-"
STUDENT = "fault-student-"


def providers(srv: FakeLLMServer, names: tuple[str, ...] = ("alpha", "beta", "gamma")) -> list[dict[str, Any]]:
    """Fake providers answering quickly (a few ms), plus a slow ``bench`` one for benchmark runs."""
    entries = []
    for name in names:
        srv.configure(name, ProviderBehavior(latency_ms=5, default_reply=f"{name} says: {{last_user}}"))
        entries.append(srv.provider_entry(name, kind="openai", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    srv.configure("bench", ProviderBehavior(latency_ms=900, default_reply="The answer is 4."))
    entries.append(srv.provider_entry("bench", kind="openai", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    return entries


def system_env(entries: list[dict[str, Any]], **extra: str) -> dict[str, str]:
    env = {
        "EMOTION_MODEL_DIR": str(emotion_model_dir() or ""),
        "ROUTER_PROVIDERS_JSON": json.dumps(entries),
        "ROUTER_LOCAL_PROVIDER": "off",
        "ROUTER_DISCOVER_ENV_KEYS": "0",
        "ROUTER_SCORES_ENABLED": "0",
        "BENCHMARK_SCHEDULE_HOURS": "0",
        "BENCHMARK_CALIBRATION": "0",
        "BENCHMARK_PROVIDER_CONCURRENCY": "4",
        "BENCHMARK_LEASE_SECONDS": "6",
        "MONGO_TIMEOUT_MS": "1000",
        "MASTERX_LOG_FORMAT": "json",
        "MASTERX_STORE_CHECK_SECONDS": "0.5",
        "MASTERX_OUTBOX_RETRY_MAX_SECONDS": "0.5",
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
    }
    env.update(extra)
    return env


def kill(system: LocalSystem, name: str, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(system.children[name].proc.pid, sig)
    system.children[name].proc.wait(10)


def restart_store(system: LocalSystem, name: str, timeout: float = 30.0) -> None:
    """Start a killed store again on its port with its data (the port may take a moment to free)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            system._start_store(name)
            return
        except (RuntimeError, TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


@dataclass
class Load:
    """Background chat + emotion traffic against the services' gRPC ports."""

    router_addr: str
    emotion_addr: str | None = None
    #: More router replicas: chat worker ``w`` uses replica ``w % replicas``.
    more_routers: tuple[str, ...] = ()
    chat_workers: int = 3
    stream_workers: int = 0
    emotion_workers: int = 2
    pause_s: float = 0.02
    chats: Tally = field(default_factory=Tally)
    analyses: Tally = field(default_factory=Tally)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def start(self) -> None:
        stubs = []
        for addr in (self.router_addr, *self.more_routers):
            router = channel(addr)
            self._channels.append(router)
            stubs.append(router_pb2_grpc.RouterServiceStub(router))
        for w in range(self.chat_workers):
            self._tasks.append(asyncio.create_task(self._chat(stubs[w % len(stubs)], w)))
        for w in range(self.stream_workers):
            n = self.chat_workers + w
            self._tasks.append(asyncio.create_task(self._chat(stubs[n % len(stubs)], n, stream=True)))
        if self.emotion_addr:
            emotion = channel(self.emotion_addr)
            self._channels.append(emotion)
            estub = emotion_pb2_grpc.EmotionServiceStub(emotion)
            for w in range(self.emotion_workers):
                self._tasks.append(asyncio.create_task(self._analyze(estub, w)))

    async def _chat(self, stub: router_pb2_grpc.RouterServiceStub, w: int, stream: bool = False) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            req = router_pb2.GenerateRequest(
                messages=[common_pb2.ChatMessage(role="user", content=f"What is {i} + {w}? Explain briefly.")],
                user_id=f"{CHAT_USER}{w}",
                purpose=router_pb2.PURPOSE_CHAT,
            )
            self.chats.sent += 1
            try:
                if stream:
                    async for chunk in stub.GenerateStream(req, timeout=10):
                        if chunk.HasField("done"):
                            self.chats.ok += 1
                else:
                    await stub.Generate(req, timeout=10)
                    self.chats.ok += 1
            except grpc.aio.AioRpcError as err:
                self.chats.failures[err.code().name] += 1
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.pause_s)

    async def _analyze(self, stub: emotion_pb2_grpc.EmotionServiceStub, w: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            req = emotion_pb2.AnalyzeRequest(
                text=f"I keep getting question {i} wrong and it is frustrating", user_id=f"{STUDENT}{w}"
            )
            self.analyses.sent += 1
            try:
                await stub.Analyze(req, timeout=10)
                self.analyses.ok += 1
            except grpc.aio.AioRpcError as err:
                self.analyses.failures[err.code().name] += 1
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.pause_s)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for chan in self._channels:
            await chan.close()


async def start_benchmark_run(addr: str, provider: str, max_items: int) -> str:
    async with channel(addr) as chan:
        stub = benchmark_pb2_grpc.BenchmarkServiceStub(chan)
        run = await stub.StartRun(
            benchmark_pb2.StartRunRequest(providers=[provider], trigger="test", max_items_per_suite=max_items),
            timeout=30,
        )
        return str(run.run_id)


async def wait_run_end(addr: str, run_id: str, timeout: float) -> Any:
    """The run's final status (GetRun polled; UNAVAILABLE while MongoDB is down is retried)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    async with channel(addr) as chan:
        stub = benchmark_pb2_grpc.BenchmarkServiceStub(chan)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                last = await stub.GetRun(benchmark_pb2.GetRunRequest(run_id=run_id), timeout=5)
                if benchmark_pb2.RunState.Name(last.state) in (
                    "RUN_STATE_SUCCEEDED",
                    "RUN_STATE_FAILED",
                    "RUN_STATE_CANCELLED",
                ):
                    return last
            await asyncio.sleep(0.5)
    return last


async def wait_serving(addr: str, service: str, timeout: float) -> float:
    """Seconds until ``service`` at ``addr`` reports SERVING."""
    started = time.monotonic()
    async with channel(addr) as chan:
        while time.monotonic() - started < timeout:
            if await health_status(chan, service, timeout=1.0) == "SERVING":
                return time.monotonic() - started
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{addr} {service} not SERVING within {timeout}s")


def health(system: LocalSystem, name: str) -> dict[str, Any]:
    return health_at(system.ports[f"{name}-metrics"])


def health_at(port: int) -> dict[str, Any]:
    """A service's /health document by its metrics port ({} when it does not answer)."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=3)
        return dict(r.json())
    except (httpx.HTTPError, ValueError):
        return {}


def wait_outboxes_empty(
    system: LocalSystem, names: tuple[str, ...], timeout: float, more_ports: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Poll each service's /health until nothing is left to store; the last stats.

    Nothing left: every outbox reports nothing pending and, for the router, its ledger holds no
    charges in memory (``ledger.queued_charges``: answered requests wait there up to one
    ROUTER_LEDGER_FLUSH_SECONDS before they reach the outbox). ``more_ports``: metrics ports of
    processes the system did not start (a second replica), checked the same way.
    """
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        docs = {n: health(system, n) for n in names} | {f"port {p}": health_at(p) for p in more_ports}
        stats = {n: d.get("outboxes", {}) for n, d in docs.items()}
        queued = sum(int(d.get("ledger", {}).get("queued_charges", 0)) for d in docs.values())
        if not queued and all(box.get("pending", 1) == 0 for boxes in stats.values() for box in boxes.values()):
            return stats
        time.sleep(0.2)
    return stats


@dataclass
class StoreCount:
    store: str
    expected: int
    written: int
    dropped: int = 0
    note: str = ""

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.written)


def account(
    mongo_url: str, load: Load, *, run_id: str = "", run_total: int = 0, db: str = "masterx"
) -> list[StoreCount]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        d = client[db]
        rows = [
            StoreCount(
                "ledger charges",
                load.chats.ok,
                d["router_ledger"].count_documents({"user_id": {"$regex": f"^{CHAT_USER}"}}),
            )
        ]
        daily = sum(
            int(r.get("requests", 0)) for r in d["router_costs_daily"].find({"user_id": {"$regex": f"^{CHAT_USER}"}})
        )
        rows.append(StoreCount("ledger daily rows (requests)", load.chats.ok, daily))
        if load.emotion_addr:
            totals = sum(int(r.get("total", 0)) for r in d["emotion_students"].find({"_id": {"$regex": f"^{STUDENT}"}}))
            rows.append(StoreCount("emotion history entries", load.analyses.ok, totals))
        if run_id:
            rows.append(
                StoreCount(
                    "benchmark item results", run_total, d["benchmark_item_results"].count_documents({"run_id": run_id})
                )
            )
        return rows
    finally:
        client.close()


def report(
    title: str,
    load: Load,
    rows: list[StoreCount],
    extra: dict[str, Any] | None = None,
    out: Callable[[str], None] = print,
) -> None:
    out(f"\n=== fault report: {title}")
    for name, t in (("chat (router Generate)", load.chats), ("emotion Analyze", load.analyses)):
        if t.sent:
            out(f"  {name:28s} sent {t.sent:6d}  ok {t.ok:6d}  client failures {t.failed:4d} {dict(t.failures) or ''}")
    for r in rows:
        out(f"  {r.store:28s} expected {r.expected:6d}  written {r.written:6d}  lost {r.lost:4d}  dropped {r.dropped}")
    for k, v in (extra or {}).items():
        out(f"  {k}: {v}")


def data_dir(tmp: Path) -> str:
    path = tmp / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
