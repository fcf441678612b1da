"""MasterX side by side with LiteLLM's proxy, both fronting the same fake OpenAI-compatible provider.

    make bench-peers            # installs LiteLLM's proxy into .bench-venv/litellm once, then runs this
    .venv/bin/python bench/bench_vs_litellm.py [--reps 3] [--seconds 2.5] [--sequential 25] [--json out.json]

Everything runs on loopback, as child processes of this script:

* the fake provider (``masterx_runtime.testing.fake_llm``): 50 ms to the first token, then 20
  tokens 5 ms apart (a non-streamed answer arrives after the whole answer, ~145 ms);
* LiteLLM's proxy (``litellm --config``, one worker, one model pointing at the fake provider,
  no database, a master key (it refuses to start without one; checked in memory), logging at ERROR);
* MasterX as ``masterx up`` runs it, less the services this path does not use: Redis,
  the MongoDB-wire server, the emotion service, the router (two providers, both the fake: see
  ``ROUTES``) and the
  gateway (``/v1/chat/completions`` with model ``masterx``: routed, emotion analysed), plus a
  second gateway with ``GATEWAY_OPENAI_EMOTION=0``. Service logs at WARNING, the gateway's
  Redis rate limiter on (with a limit the run cannot reach).

Targets, measured in turn (A B A B ...) in each of ``--reps`` repetitions so that machine load
drifts hit all of them alike: ``direct`` (the provider itself: the baseline), ``litellm``,
``mx-gateway`` (emotion on), ``mx-gateway-noemo`` and ``mx-router`` (the router over gRPC). The
router runs with ``ROUTER_CATEGORY_EMOTION_ADDR=`` (empty), so a request without an emotion
result gets the TF-IDF category instead of an encoder pass in the emotion service: the two
emotion-off targets run no model at all. The gateway with emotion on sends ``analyze_emotion``
(as by default): the router asks the emotion service (EMOTION_ADDR) for the analysis and starts
the provider it would pick without it meanwhile; the run ends with how often the analysis
confirmed that early call. The emotion process still counts towards every MasterX target's CPU.
Per target: latency of non-streamed requests at 1 and 32 concurrent clients; streaming time to
first token and whole-stream time at 1, 50 and 200 concurrent streams (closed loop: each
stream slot starts a new stream when its last one ends); throughput at 64 clients, with the
CPU time of the proxy's own processes per request (from /proc, so it does not depend on what
else shares the cores). Overhead = the target's p50 minus the provider's own p50; ratios are
MasterX / LiteLLM. A minimal raw HTTP/1.1 client (keep-alive, chunked decoding, a regex for
the first content token) keeps the load generator's own cost small and equal for all targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from masterx.common.v1 import common_pb2  # noqa: E402
from masterx.router.v1 import router_pb2, router_pb2_grpc  # noqa: E402
from masterx_runtime.launcher import SERVICES, LocalSystem  # noqa: E402
from masterx_runtime.testing.benchstats import cpu_seconds as process_cpu_seconds  # noqa: E402
from masterx_runtime.testing.benchstats import machine, percentile  # noqa: E402
from masterx_runtime.testing.servers import ManagedProcess, free_port, wait_for_port  # noqa: E402

DEFAULT_LITELLM = ROOT / ".bench-venv" / "litellm" / "bin" / "litellm"
# LiteLLM's proxy refuses to start without a master key; with no database it checks the key in memory.
LITELLM_KEY = "sk-bench-" + "0123456789abcdef" * 4
TTFT_MS = 50.0
TOKENS = 20
TOKEN_MS = 5.0
REPLY = " ".join(f"word{i}" for i in range(TOKENS))
MAX_TOKENS = 64
PROMPTS = [
    "I don't understand why my for loop runs one extra time at the end of the list.",
    "Can you show me another example of how to find the derivative of a product of two functions?",
    "I'm really nervous about the calculus exam on Friday because I still mix up the chain rule.",
    "Thanks, that hint about drawing the triangle first helped a lot with the geometry proof.",
    "Why does Python say that the variable is not defined when I clearly defined it above?",
    "Ugh, the compiler error message makes no sense at all and I am getting really annoyed.",
    "What is the difference between weather and climate? My teacher said they are not the same.",
    "I was confused about matrices yesterday but today it suddenly clicked and I feel confident.",
]
_FIRST_TOKEN = re.compile(rb'"content":\s*"(?!")')


# ---- a small HTTP/1.1 client ---------------------------------------------------------------------
class Conn:
    """One keep-alive connection; ``post`` returns (status, ttft ms or 0, total ms)."""

    def __init__(self, host: str, port: int, headers: bytes = b"") -> None:
        self.host, self.port = host, port
        self.headers = headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, float, float]:
        for attempt in (0, 1):
            try:
                return await self._post(path, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _post(self, path: str, body: bytes) -> tuple[int, float, float]:
        started = time.perf_counter()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        assert reader is not None
        writer.write(
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
            % (path.encode(), self.host.encode(), self.port, len(body), self.headers, body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        ttft = 0.0
        close = b"connection: close" in headers
        if b"transfer-encoding: chunked" in headers:
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                data = await reader.readexactly(size + 2)
                if not ttft and _FIRST_TOKEN.search(data):
                    ttft = (time.perf_counter() - started) * 1000
        else:
            m = re.search(rb"content-length:\s*(\d+)", headers)
            if m is None:
                await reader.read()
                close = True
            else:
                await reader.readexactly(int(m.group(1)))
        if close:
            await self.close()
        return status, ttft, (time.perf_counter() - started) * 1000


# ---- targets -------------------------------------------------------------------------------------
@dataclass
class Target:
    """Something that answers chat completions; ``procs`` are its own processes (name -> pid, for CPU time)."""

    name: str
    procs: dict[str, int] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/v1/chat/completions"
    model: str = ""
    grpc_addr: str = ""
    api_key: str = ""

    def body(self, prompt: str, stream: bool) -> bytes:
        return json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "stream": stream,
                "max_tokens": MAX_TOKENS,
            }
        ).encode()

    def client(self) -> Callable[[str, bool], Awaitable[tuple[float, float]]]:
        """A per-worker call: (prompt, stream) -> (ttft ms, total ms); raises on a failed call."""
        if self.grpc_addr:
            chan = grpc.aio.insecure_channel(self.grpc_addr)
            stub = router_pb2_grpc.RouterServiceStub(chan)

            async def call_grpc(prompt: str, stream: bool) -> tuple[float, float]:
                req = router_pb2.GenerateRequest(
                    messages=[common_pb2.ChatMessage(role="user", content=prompt)],
                    max_tokens=MAX_TOKENS,
                    purpose=router_pb2.PURPOSE_CHAT,
                )
                started = time.perf_counter()
                if not stream:
                    await stub.Generate(req, timeout=60)
                    return 0.0, (time.perf_counter() - started) * 1000
                ttft = 0.0
                async for chunk in stub.GenerateStream(req, timeout=60):
                    if not ttft and chunk.WhichOneof("kind") == "delta":
                        ttft = (time.perf_counter() - started) * 1000
                return ttft, (time.perf_counter() - started) * 1000

            call_grpc.channel = chan  # type: ignore[attr-defined]
            return call_grpc
        conn = Conn(self.host, self.port, f"authorization: Bearer {self.api_key}\r\n".encode() if self.api_key else b"")

        async def call_http(prompt: str, stream: bool) -> tuple[float, float]:
            status, ttft, total = await conn.post(self.path, self.body(prompt, stream))
            if status != 200:
                raise RuntimeError(f"{self.name}: HTTP {status}")
            return ttft, total

        call_http.conn = conn  # type: ignore[attr-defined]
        return call_http


async def _release(call: Any) -> None:
    if hasattr(call, "conn"):
        await call.conn.close()
    if hasattr(call, "channel"):
        await call.channel.close()


# ---- CPU time of process trees -------------------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def cpu_seconds(procs: dict[str, int]) -> dict[str, float]:
    """User + system CPU time so far of each named process and its descendants."""
    out: dict[str, float] = {}
    for name, root in procs.items():
        total = 0.0
        for p in _descendants(root):
            with contextlib.suppress(OSError):  # a child that has just exited
                total += process_cpu_seconds(p)
        out[name] = total
    return out


# ---- load shapes ---------------------------------------------------------------------------------
@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: float = float("nan")  # of the target's own processes; NaN when it has none
    last_error: str = ""
    cpu_by_process: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_ms_per_request(self) -> float:
        n = len(self.total) + self.errors
        return self.cpu_seconds * 1000 / n if n else float("nan")

    def extend(self, other: Sample) -> None:
        self.ttft += other.ttft
        self.total += other.total
        self.errors += other.errors
        self.seconds += other.seconds
        self.last_error = other.last_error or self.last_error
        for n, v in other.cpu_by_process.items():
            self.cpu_by_process[n] = self.cpu_by_process.get(n, 0.0) + v
        self.cpu_seconds = (
            other.cpu_seconds if self.cpu_seconds != self.cpu_seconds else self.cpu_seconds + other.cpu_seconds
        )


async def closed_loop(
    target: Target, workers: int, stream: bool, *, seconds: float = 0.0, calls: int = 0, spread_ms: float = 0.0
) -> Sample:
    """``workers`` slots, each calling again when its last call ends, for ``seconds`` or ``calls`` each.

    Every slot first opens its connection with one unmeasured call; the clock starts when all
    have. Slots then start within ``spread_ms`` of each other (a steady load, not one burst) and
    make at least one measured call each, however slow the target is.
    """
    sample = Sample()
    rng = random.Random(workers)
    connected = 0
    go = asyncio.Event()
    stop_at = 0.0

    async def worker(k: int) -> None:
        nonlocal connected
        call = target.client()
        try:
            try:
                with contextlib.suppress(*FAILURES):
                    await call(PROMPTS[k % len(PROMPTS)], stream)
            finally:
                connected += 1
                if connected == workers:
                    go.set()
            await go.wait()
            if spread_ms:
                await asyncio.sleep(rng.uniform(0, spread_ms) / 1000)
            n = 0
            while n < calls if calls else (n == 0 or time.perf_counter() < stop_at):
                try:
                    ttft, total = await call(PROMPTS[(k * 7 + n) % len(PROMPTS)], stream)
                except FAILURES as exc:
                    sample.errors += 1
                    sample.last_error = f"{type(exc).__name__}: {exc}"[:200]
                else:
                    sample.total.append(total)
                    if stream:
                        sample.ttft.append(ttft)
                n += 1
        finally:
            await _release(call)

    tasks = [asyncio.ensure_future(worker(k)) for k in range(workers)]
    await go.wait()
    began = time.perf_counter()
    stop_at = began + seconds
    await asyncio.gather(*tasks)
    sample.seconds = time.perf_counter() - began
    return sample


STREAM_MS = TTFT_MS + (TOKENS - 1) * TOKEN_MS
FAILURES = (RuntimeError, OSError, grpc.aio.AioRpcError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


def scenarios(args: argparse.Namespace) -> list[tuple[str, Callable[[Target], Awaitable[Sample]]]]:
    s = args.seconds
    return [
        ("latency, 1 client", lambda t: closed_loop(t, 1, False, calls=args.sequential)),
        ("latency, 32 clients", lambda t: closed_loop(t, 32, False, seconds=s, spread_ms=STREAM_MS)),
        ("stream, 1 stream", lambda t: closed_loop(t, 1, True, calls=args.sequential // 2)),
        ("stream, 50 streams", lambda t: closed_loop(t, 50, True, seconds=s, spread_ms=STREAM_MS)),
        ("stream, 200 streams", lambda t: closed_loop(t, 200, True, seconds=s, spread_ms=STREAM_MS)),
        ("throughput, 64 clients", lambda t: closed_loop(t, 64, False, seconds=s, spread_ms=STREAM_MS)),
    ]


async def measure_cpu(target: Target, run: Callable[[Target], Awaitable[Sample]]) -> Sample:
    before = cpu_seconds(target.procs)
    sample = await run(target)
    if target.procs:
        after = cpu_seconds(target.procs)
        sample.cpu_by_process = {n: after[n] - before[n] for n in after}
        sample.cpu_seconds = sum(sample.cpu_by_process.values())
    return sample


# ---- processes -----------------------------------------------------------------------------------
def start_fake(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = tmp / "fake.json"
    behaviour = {"ttft_ms": TTFT_MS, "tokens_per_second": 1000.0 / TOKEN_MS, "default_reply": REPLY}
    cfg.write_text(json.dumps({"providers": {"peer": behaviour}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "masterx_runtime.testing.fake_llm", "--port", str(port), "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_port("127.0.0.1", port, 20, proc)
    return proc, port


def start_litellm(binary: Path, fake_port: int, tmp: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: http://127.0.0.1:{fake_port}/p/peer/v1\n"
        "      api_key: sk-bench-not-a-key\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    env = {
        # Its own venv only: nothing of MasterX's import path, database or keys leaks in.
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("DATABASE_URL", "LITELLM_MASTER_KEY"))
        },
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    log = open(tmp / "litellm.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            str(binary.absolute()),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp,
    )
    managed = ManagedProcess("litellm", f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"litellm exited: {(tmp / 'litellm.log').read_text(errors='replace')[-2000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=1) as r,
        ):
            if r.status == 200:
                return managed, port
        time.sleep(0.5)
    managed.stop()
    raise TimeoutError("litellm did not come up in 180 s")


#: MasterX routes between two providers (both the same fake behind the same URL), so its decision
#: is a real choice that the category and the emotion move: one strong at coding and math, one at
#: the rest. LiteLLM gets the same fake as its one model.
ROUTES = {
    "peer-stem": {"coding": 90, "math": 90, "research": 60, "language": 60, "empathy": 60, "general": 60},
    "peer-words": {"coding": 60, "math": 60, "research": 90, "language": 90, "empathy": 90, "general": 90},
}


def start_masterx(fake_port: int, tmp: Path) -> tuple[LocalSystem, ManagedProcess]:
    providers = [
        {
            "name": name,
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{fake_port}/p/peer/v1",
            "model": "fake-model",
            "input_price_per_mtok": 0.15,
            "output_price_per_mtok": 0.6,
            "quality": quality,
        }
        for name, quality in ROUTES.items()
    ]
    env = {
        "ROUTER_PROVIDERS_JSON": json.dumps(providers),
        "ROUTER_LOCAL_PROVIDER": "off",
        "ROUTER_DISCOVER_ENV_KEYS": "0",
        "ROUTER_SCORES_ENABLED": "0",
        # The emotion-off targets run no encoder at all: without an emotion result the router takes
        # the TF-IDF category (by default it would ask the emotion service itself).
        "ROUTER_CATEGORY_EMOTION_ADDR": "",
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "10000000",
        "MASTERX_LOG_LEVEL": "WARNING",
        "MASTERX_LOG_FORMAT": "json",
    }
    system = LocalSystem(
        state_dir=tmp / "masterx", fixed_ports=False, env=env, services=("emotion", "router", "gateway")
    )
    system.start(timeout=180)
    # A second gateway on the same router, with the emotion call of /v1 switched off.
    spec = next(s for s in SERVICES if s.name == "gateway")
    port = free_port()
    genv = {**system._service_env(spec), "GATEWAY_PORT": str(port), "GATEWAY_OPENAI_EMOTION": "0"}
    log = open(system.logs / "gateway-noemo.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.gateway"],
        env=genv,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    noemo = ManagedProcess("gateway-noemo", f"http://127.0.0.1:{port}", proc)
    try:
        wait_for_port("127.0.0.1", port, 60, proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{noemo.url}/healthz", timeout=1) as r:
                if r.status == 200:
                    break
            time.sleep(0.2)
    except BaseException:
        noemo.stop()
        system.stop()
        raise
    return system, noemo


def stop_all(fake: subprocess.Popen[bytes], system: LocalSystem | None, *procs: ManagedProcess | None) -> None:
    """Stop what start_fake, start_litellm and start_masterx started (None: never started)."""
    for proc in procs:
        if proc is not None:
            proc.stop()
    if system is not None:
        system.stop()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(fake.pid, signal.SIGTERM)
    fake.wait(10)


# ---- report --------------------------------------------------------------------------------------
def emotion_model_version(health_url: str) -> str:
    """The model the emotion service ran, from its /health document ("?" if it did not answer)."""
    try:
        with urllib.request.urlopen(f"{health_url}/health", timeout=5) as resp:
            return str(json.loads(resp.read()).get("model_version") or "?")
    except (OSError, ValueError):
        return "?"


def speculation_counts(metrics_url: str) -> dict[str, float]:
    """masterx_router_speculation_total by outcome, from the router's Prometheus endpoint."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.findall(r'^masterx_router_speculation_total\{outcome="(\w+)"\} ([0-9.e+]+)$', text, re.M)
    return {outcome: float(n) for outcome, n in found}


def p50(v: list[float]) -> float:
    return percentile(v, 50)


def p95(v: list[float]) -> float:
    return percentile(v, 95)


def report(
    results: dict[str, dict[str, Sample]],
    order: list[str],
    load: str,
    per_rep: dict[str, dict[str, list[float]]] | None = None,
) -> dict[str, Any]:
    lines: list[str] = []
    out: dict[str, Any] = {"load": load, "targets": {}}
    base = results["direct"]
    for scen in results[order[0]]:
        lines.append(f"\n### {scen}\n")
        streaming = scen.startswith("stream")
        if streaming:
            lines.append(
                "| target | TTFT p50 | TTFT p95 | TTFT overhead p50 | stream p50 | stream p95 | stream overhead p50 | errors |"
            )
            lines.append("|---|---|---|---|---|---|---|---|")
        else:
            lines.append(
                "| target | p50 ms | p95 ms | overhead p50 ms | req/s | CPU ms/request (own processes) | errors |"
            )
            lines.append("|---|---|---|---|---|---|---|")
        for name in order:
            s = results[name][scen]
            b = base[scen]
            rps = len(s.total) / s.seconds if s.seconds else 0.0
            row: dict[str, float] = {
                "p50_ms": p50(s.total),
                "p95_ms": p95(s.total),
                "overhead_p50_ms": p50(s.total) - p50(b.total),
                "rps": rps,
                "cpu_ms_per_request": s.cpu_ms_per_request,
                "errors": s.errors,
            }
            if streaming:
                row |= {
                    "ttft_p50_ms": p50(s.ttft),
                    "ttft_p95_ms": p95(s.ttft),
                    "ttft_overhead_p50_ms": p50(s.ttft) - p50(b.ttft),
                }
                lines.append(
                    f"| {name} | {row['ttft_p50_ms']:.1f} | {row['ttft_p95_ms']:.1f} | {row['ttft_overhead_p50_ms']:+.1f} "
                    f"| {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['overhead_p50_ms']:+.1f} | {s.errors} |"
                )
            else:
                cpu = "" if s.cpu_ms_per_request != s.cpu_ms_per_request else f"{s.cpu_ms_per_request:.2f}"
                lines.append(
                    f"| {name} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['overhead_p50_ms']:+.1f} "
                    f"| {rps:.0f} | {cpu} | {s.errors} |"
                )
            out["targets"].setdefault(name, {})[scen] = row
    scen = "throughput, 64 clients"
    if scen in results[order[0]]:
        lines.append(f"\n### CPU ms per request by process ({scen})\n")
        lines.append("| target | process | CPU ms/request | busy (% of one core) |")
        lines.append("|---|---|---|---|")
        for name in order:
            s = results[name][scen]
            n = max(1, len(s.total) + s.errors)
            for proc, used in s.cpu_by_process.items():
                busy = 100 * used / s.seconds if s.seconds else float("nan")
                lines.append(f"| {name} | {proc} | {used * 1000 / n:.2f} | {busy:.0f} |")
            out["targets"][name][scen]["cpu_ms_by_process"] = {p: u * 1000 / n for p, u in s.cpu_by_process.items()}
    t = out["targets"]
    ll = t.get("litellm")
    ratios: dict[str, dict[str, float]] = {}
    if ll is not None:
        for name in order:
            if not name.startswith("mx-"):
                continue
            mx = t[name]

            def ratio(scen: str, key: str, mx: dict[str, Any] = mx) -> float:
                d = ll[scen][key]
                return mx[scen][key] / d if d else float("nan")

            ratios[name] = {
                "overhead_1_client": ratio("latency, 1 client", "overhead_p50_ms"),
                "overhead_32_clients": ratio("latency, 32 clients", "overhead_p50_ms"),
                "throughput_64_clients": ratio("throughput, 64 clients", "rps"),
                "cpu_per_request": ratio("throughput, 64 clients", "cpu_ms_per_request"),
                "ttft_overhead_50_streams": ratio("stream, 50 streams", "ttft_overhead_p50_ms"),
                "stream_overhead_50_streams": ratio("stream, 50 streams", "overhead_p50_ms"),
                "ttft_200_streams": ratio("stream, 200 streams", "ttft_p50_ms"),
                "stream_200_streams": ratio("stream, 200 streams", "p50_ms"),
            }
        lines.append("\n### MasterX / LiteLLM\n")
        lines.append(
            "| target | overhead, 1 client | overhead, 32 clients | throughput, 64 clients | CPU per request "
            "| TTFT overhead, 50 streams | whole-stream overhead, 50 streams | TTFT p50, 200 streams | whole stream p50, 200 streams |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for name, r in ratios.items():
            lines.append(
                f"| {name} | {r['overhead_1_client']:.2f} | {r['overhead_32_clients']:.2f} | {r['throughput_64_clients']:.2f}x "
                f"| {r['cpu_per_request']:.2f} | {r['ttft_overhead_50_streams']:.2f} | {r['stream_overhead_50_streams']:.2f} "
                f"| {r['ttft_200_streams']:.2f} | {r['stream_200_streams']:.2f} |"
            )
        scen = "throughput, 64 clients"
        ll_reps = (per_rep or {}).get("litellm", {}).get(scen, [])
        if per_rep and ll_reps:
            # LiteLLM's own speed moves between repetitions (more than MasterX's on this VM), so the
            # pooled ratio above is shown with each repetition's, the lowest being the cautious figure.
            lines.append(
                "\nthroughput at 64 clients per repetition (req/s; ratio to LiteLLM's in the same repetition):"
            )
            lines.append("  litellm: " + " / ".join(f"{v:.0f}" for v in ll_reps))
            for name in ratios:
                reps = per_rep[name].get(scen, [])  # per_rep is set: LiteLLM's repetitions came from it
                each = [m / d for m, d in zip(reps, ll_reps, strict=False) if d]
                if each:
                    lines.append(
                        f"  {name}: "
                        + " / ".join(f"{v:.0f}" for v in reps)
                        + " ("
                        + " / ".join(f"{r:.2f}x" for r in each)
                        + f"; lowest {min(each):.2f}x)"
                    )
                    out.setdefault("throughput_64_clients_per_repetition", {})[name] = each
        gw = ratios.get("mx-gateway")
        if gw is not None:
            checks = [
                ("overhead ratio at 1 client <= 0.5", gw["overhead_1_client"] <= 0.5, gw["overhead_1_client"]),
                ("throughput at 64 clients >= 2.5x", gw["throughput_64_clients"] >= 2.5, gw["throughput_64_clients"]),
                ("whole-stream overhead ratio at 50 streams <= 0.4", gw["stream_overhead_50_streams"] <= 0.4, gw["stream_overhead_50_streams"]),
                ("TTFT at 200 streams no worse (ratio <= 1)", gw["ttft_200_streams"] <= 1.0, gw["ttft_200_streams"]),
            ]  # fmt: skip
            lines.append("\ntargets, gateway with emotion on vs LiteLLM:")
            lines += [f"  [{'PASS' if ok else 'MISS'}] {label}: {v:.2f}" for label, ok, v in checks]
    out["ratios"] = ratios
    print("\n".join(lines), flush=True)
    return out


async def run_all(
    targets: list[Target], args: argparse.Namespace
) -> tuple[dict[str, dict[str, Sample]], dict[str, dict[str, list[float]]]]:
    """Every scenario's samples pooled over the repetitions, and each repetition's req/s."""
    results: dict[str, dict[str, Sample]] = {t.name: {} for t in targets}
    per_rep: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}
    for t in targets:  # warm every path (connections, model, caches); a path that fails here is reported
        for stream in (False, True):
            s = await closed_loop(t, 4, stream, calls=4)
            if s.errors:
                print(f"warm-up {t.name} stream={stream}: {s.errors} errors (last: {s.last_error})", flush=True)
    plan = scenarios(args)
    for rep in range(args.reps):
        order = targets if rep % 2 == 0 else list(reversed(targets))
        for scen, run in plan:
            for t in order:
                s = await measure_cpu(t, run)
                results[t.name].setdefault(scen, Sample()).extend(s)
                per_rep[t.name].setdefault(scen, []).append(len(s.total) / s.seconds if s.seconds else 0.0)
                print(
                    f"rep {rep + 1}/{args.reps} {scen:<24} {t.name:<17} p50 {p50(s.total):7.1f} ms"
                    + (f"  ttft p50 {p50(s.ttft):6.1f} ms" if s.ttft else "")
                    + f"  {len(s.total) / s.seconds:6.0f}/s  errors {s.errors}"
                    + (f" (last: {s.last_error})" if s.errors else ""),
                    flush=True,
                )
    return results, per_rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--litellm", type=Path, default=DEFAULT_LITELLM, help="the litellm CLI of its own venv")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (targets interleaved in each)")
    ap.add_argument("--seconds", type=float, default=2.5, help="seconds per concurrent scenario and target")
    ap.add_argument("--sequential", type=int, default=25, help="requests in the 1-client scenario")
    ap.add_argument("--only", nargs="*", default=None, help="targets to run (direct is always run)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if not args.litellm.exists():
        print(f"LiteLLM's proxy is not installed at {args.litellm}: run `make bench-peers` (skipped)")
        return
    host = machine()
    tmp = Path(tempfile.mkdtemp(prefix="masterx-bench-peers-"))
    fake, fake_port = start_fake(tmp)
    litellm: ManagedProcess | None = None
    system: LocalSystem | None = None
    noemo: ManagedProcess | None = None
    try:
        print("starting LiteLLM's proxy and MasterX (redis, mongodb-wire, emotion, router, 2 gateways) ...", flush=True)
        litellm, litellm_port = start_litellm(args.litellm, fake_port, tmp)
        system, noemo = start_masterx(fake_port, tmp)
        pid = {n: c.proc.pid for n, c in system.children.items()}
        stores: dict[str, int] = {n: pid[n] for n in ("redis", "mongodb") if n in pid}
        gw = system.children["gateway"]
        targets = [
            Target(
                "direct", {"fake provider": fake.pid}, port=fake_port, path="/p/peer/v1/chat/completions", model="m"
            ),
            Target("litellm", {"litellm": litellm.proc.pid}, port=litellm_port, model="fake", api_key=LITELLM_KEY),
            Target(
                "mx-gateway",
                {"gateway": pid["gateway"], "router": pid["router"], "emotion": pid["emotion"], **stores},
                port=int(gw.url.rsplit(":", 1)[1]),
                model="masterx",
            ),
            Target(
                "mx-gateway-noemo",
                {"gateway": noemo.proc.pid, "router": pid["router"], "emotion": pid["emotion"], **stores},
                port=int(noemo.url.rsplit(":", 1)[1]),
                model="masterx",
            ),
            Target(
                "mx-router",
                {"router": pid["router"], "emotion": pid["emotion"], **stores},
                grpc_addr=system.children["router"].url,
            ),
        ]
        if args.only:
            targets = [t for t in targets if t.name == "direct" or t.name in args.only]
        load_start = os.getloadavg()
        results, per_rep = asyncio.run(run_all(targets, args))
        load_end = os.getloadavg()
        speculation = speculation_counts(f"http://127.0.0.1:{system.ports['router-metrics']}")
        emotion_model = emotion_model_version(f"http://127.0.0.1:{system.ports['emotion-metrics']}")
    finally:
        stop_all(fake, system, noemo, litellm)
        shutil.rmtree(tmp, ignore_errors=True)
    load = (
        f"load average {load_start[0]:.2f} at the start of the measurements, {load_end[0]:.2f} (1 min) / "
        f"{load_end[1]:.2f} (5 min) at the end"
    )
    print(f"\n## MasterX vs LiteLLM proxy ({args.reps} interleaved repetitions)\n")
    print(f"machine: {host}; {load}")
    print(f"emotion model: {emotion_model} (EMOTION_MODEL_DIR picks another)")
    print(
        f"provider: fake OpenAI-compatible, {TTFT_MS:.0f} ms to first token, {TOKENS} tokens {TOKEN_MS:.0f} ms apart; "
        "CPU = user+system time of the target's own processes (MasterX: gateway, router, emotion, Redis, "
        "MongoDB-wire; LiteLLM: its proxy process) per request, during the 64-client run"
    )
    out = report(results, [t.name for t in targets], load, per_rep)
    out["machine"] = host
    out["emotion_model"] = emotion_model
    total = sum(speculation.values())
    if total:
        shares = ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(speculation.items(), key=lambda kv: -kv[1]))
        print(f"\nrouter's speculative starts (gateway with emotion on, {total:.0f} requests): {shares}")
    out["speculation"] = speculation
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
