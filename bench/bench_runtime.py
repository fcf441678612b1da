"""Per-RPC cost of the shared server runtime (masterx_runtime) on a trivial servicer.

    .venv/bin/python bench/bench_runtime.py [--calls 3000] [--concurrency 16] [--reps 3]
        [--modes bare,full] [--baseline DIR]

Runs the same trivial EmotionService (Analyze answers at once) in a child process, one way per
mode:

* ``bare``: a plain ``grpc.aio`` server, no interceptors;
* ``noop``: a plain server with one interceptor that does nothing (the floor of any interceptor);
* ``stack``: a plain server with ``masterx_runtime.interceptors.default_interceptors``;
* ``full``: :class:`masterx_runtime.server.GrpcServer` (request context, metrics, error mapping,
  validation, readiness, health, reflection), logging at WARNING like the benchmarked services;
* ``base``: ``full`` with the runtime found in ``--baseline DIR`` (e.g. an older copy unpacked
  with ``git archive <rev> masterx_runtime | tar -x -C DIR``), for a before/after in one run.

For each run, on loopback: sequential unary calls (one at a time): p50/p95 at the client and the
server's CPU time per call (user + system of the child, from /proc); then ``--concurrency``
callers in flight: the server's CPU per call and calls/s. The modes alternate, ``--reps`` times,
so a busy machine hurts all alike; the table has one row per run plus the medians.

Last, for ``full`` and ``base``: the interceptors alone, without grpc's I/O (best of ``--reps``):
finding the handler through the interceptor chain as grpc.aio does on every call, and running
the wrapped handler on a fake context; and the shared input rules (``check_request``) on a router
GenerateRequest as the gateway sends it (6 chat messages and a full EmotionResult).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: a runtime first on PYTHONPATH wins (--baseline)

import grpc  # noqa: E402

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc  # noqa: E402
from masterx_runtime.testing.benchstats import machine, percentile  # noqa: E402

SERVICE = "masterx.emotion.v1.EmotionService"
METHOD = f"/{SERVICE}/Analyze"
MODES = ("bare", "noop", "stack", "full", "base")
TEXT = "I keep getting a different number than the book and I have checked my work three times already."


def _request() -> emotion_pb2.AnalyzeRequest:
    return emotion_pb2.AnalyzeRequest(text=TEXT, user_id="s-42", session_id="sess-1", request_id="r1")


class Trivial(emotion_pb2_grpc.EmotionServiceServicer):
    async def Analyze(
        self, request: emotion_pb2.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> emotion_pb2.AnalyzeResponse:
        return emotion_pb2.AnalyzeResponse(request_id=request.request_id)


class _Noop(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return await continuation(handler_call_details)


def _full_server() -> Any:
    from masterx_runtime.server import GrpcServer, ServiceApp
    from masterx_runtime.settings import ServerSettings

    class App(ServiceApp):
        name = "bench"
        service_names = (SERVICE,)
        default_grpc_port = 0
        default_metrics_port = 0

        def register(self, server: grpc.aio.Server) -> None:
            emotion_pb2_grpc.add_EmotionServiceServicer_to_server(Trivial(), server)  # type: ignore[abstract]

    settings = dataclasses.replace(ServerSettings(), grpc_port=0, metrics_port=-1, log_level="WARNING")
    return GrpcServer(App(), settings)


async def _serve(mode: str) -> None:
    if mode in ("full", "base"):
        full = _full_server()
        port = await full.start()
        stop = full.stop
    else:
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if mode == "noop":
            interceptors = [_Noop()]
        elif mode == "stack":
            from masterx_runtime.interceptors import default_interceptors

            interceptors = default_interceptors("bench")
        server = grpc.aio.server(interceptors=interceptors)
        emotion_pb2_grpc.add_EmotionServiceServicer_to_server(Trivial(), server)  # type: ignore[abstract]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stop = server.stop
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await stop(0)


class _FakeContext:
    """Just what the runtime's interceptors use of a grpc.aio ServicerContext."""

    def __init__(self) -> None:
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "grpc-python-asyncio/1"), ("x-request-id", "abc123"))

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing

    def code(self) -> None:
        return None


@dataclasses.dataclass
class _Details:
    method: str = METHOD
    invocation_metadata: tuple[tuple[str, str], ...] = ()


async def _direct(calls: int) -> tuple[float, float]:
    """(handler lookup, wrapped call) CPU us per call of GrpcServer's interceptors, no grpc I/O."""
    captured: list[Any] = []
    real_server = grpc.aio.server

    def capturing_server(*args: Any, **kwargs: Any) -> Any:
        captured.extend(kwargs.get("interceptors") or ())
        return real_server(*args, **kwargs)

    grpc.aio.server = capturing_server  # type: ignore[assignment]
    try:
        server = _full_server()
        await server.start()
    finally:
        grpc.aio.server = real_server
    handler = grpc.unary_unary_rpc_method_handler(Trivial().Analyze)  # type: ignore[abstract]
    details = _Details()

    async def run_interceptor(interceptors: Any, details: Any) -> Any:  # as grpc.aio's _run_interceptor
        interceptor = next(interceptors, None)
        if interceptor:
            return await interceptor.intercept_service(functools.partial(run_interceptor, interceptors), details)
        return handler

    chain, request = tuple(captured), _request()
    found = await run_interceptor(iter(chain), details)
    t0 = time.process_time()
    for _ in range(calls):
        found = await run_interceptor(iter(chain), details)
    lookup = (time.process_time() - t0) * 1e6 / calls
    t0 = time.process_time()
    for _ in range(calls):
        await found.unary_unary(request, _FakeContext())
    call = (time.process_time() - t0) * 1e6 / calls
    await server.stop(0)
    return lookup, call


def _router_request() -> Any:
    """A router GenerateRequest as the gateway sends it: 6 chat messages and a full EmotionResult."""
    from masterx.common.v1 import common_pb2
    from masterx.router.v1 import router_pb2

    emotion = common_pb2.EmotionResult(primary_emotion="confusion", confidence=0.61, ekman_group="surprise")
    emotion.model_version, emotion.latency_ms = "go-int8", 3.2
    for i in range(28):
        emotion.scores.add(label=f"label_{i}", probability=0.01 * i, active=i < 3)
    for name in ("engaged", "confused", "frustrated", "bored", "curious", "anxious", "confident", "flow"):
        emotion.learning_state_scores[name] = 0.1
    for _ in range(6):
        emotion.category_scores.add()
    for _ in range(7):
        emotion.ekman_scores.add()
    emotion.ekman_active.extend(["surprise", "fear"])
    emotion.readiness.score, emotion.intervention.score = 0.5, 0.4
    emotion.intervention.reasons.append("confusion rising")
    request = router_pb2.GenerateRequest(user_id="s-42", session_id="sess-1", max_tokens=512, emotion=emotion)
    for i in range(6):
        request.messages.add(role="user" if i % 2 == 0 else "assistant", content="Explain how fractions work. " * 12)
    return request


def _validation(calls: int) -> float:
    """CPU us of one check_request on :func:`_router_request` (best of 5 rounds)."""
    from masterx_runtime.validation import check_request

    request, best = _router_request(), float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(calls):
            check_request(request)
        best = min(best, (time.process_time() - t0) * 1e6 / calls)
    return best


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Row:
    mode: str
    p50_ms: float
    p95_ms: float
    seq_cpu_us: float
    cpu_us: float
    rate: float

    def line(self, label: str = "") -> str:
        return (
            f"| {label or self.mode} | {self.p50_ms:.3f} | {self.p95_ms:.3f} | {self.seq_cpu_us:.0f} "
            f"| {self.cpu_us:.0f} | {self.rate:.0f} |"
        )


HEADER = (
    "| mode | p50 ms | p95 ms | server CPU us/call, sequential | server CPU us/call, in flight | calls/s |\n"
    "|---|---|---|---|---|---|"
)


async def _measure(mode: str, pid: int, port: int, calls: int, concurrency: int) -> Row:
    request = _request()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        stub = emotion_pb2_grpc.EmotionServiceStub(chan)  # type: ignore[no-untyped-call]
        for _ in range(200):  # warm-up
            await stub.Analyze(request, timeout=10)
        latencies = []
        before = cpu_seconds(pid)
        for _ in range(calls):
            t0 = time.perf_counter()
            await stub.Analyze(request, timeout=10)
            latencies.append((time.perf_counter() - t0) * 1000)
        seq_cpu = cpu_seconds(pid) - before

        async def caller(n: int) -> None:
            for _ in range(n):
                await stub.Analyze(request, timeout=10)

        each = max(1, calls // concurrency)
        before, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(caller(each) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - before
    total = each * concurrency
    return Row(
        mode,
        percentile(latencies, 50),
        percentile(latencies, 95),
        seq_cpu * 1e6 / calls,
        cpu * 1e6 / total,
        total / wall,
    )


def _child_env(mode: str, baseline: str) -> dict[str, str]:
    env = dict(os.environ)
    if mode == "base":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (baseline, env.get("PYTHONPATH", "")) if p)
    return env


def run_one(mode: str, args: argparse.Namespace) -> Row:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_child_env(mode, args.baseline),
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        return asyncio.run(_measure(mode, child.pid, port, args.calls, args.concurrency))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_direct(mode: str, args: argparse.Namespace) -> tuple[float, float, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--direct-child", str(args.direct)],
        capture_output=True,
        text=True,
        check=True,
        env=_child_env(mode, args.baseline),
    ).stdout.split()
    return float(out[-3]), float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls per measurement (sequential, in flight)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", default="bare,full", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--baseline", default="", help="directory holding the masterx_runtime for mode 'base'")
    parser.add_argument("--direct", type=int, default=20000, help="calls for the interceptors-alone figure (0: skip)")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--direct-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    if args.direct_child:
        lookup, call = asyncio.run(_direct(args.direct_child))
        print(_validation(max(1, args.direct_child // 10)), lookup, call)
        return
    modes = args.modes.split(",")
    if "base" in modes and not (Path(args.baseline) / "masterx_runtime").is_dir():
        parser.error("mode 'base' needs --baseline DIR with a masterx_runtime package in it")
    print(f"{args.calls} calls sequential, {args.calls} with {args.concurrency} in flight, per run; {machine()}")
    print(HEADER)
    rows: list[Row] = []
    for _ in range(args.reps):
        for mode in modes:
            rows.append(run_one(mode, args))
            print(rows[-1].line(), flush=True)
    for mode in modes:
        mine = [r for r in rows if r.mode == mode]
        med = Row(
            mode, *(statistics.median(getattr(r, f) for r in mine) for f in Row.__dataclass_fields__ if f != "mode")
        )
        print(med.line(f"{mode} (median)"))
    if args.direct > 0:
        for mode in (m for m in modes if m in ("full", "base")):
            runs = [run_direct(mode, args) for _ in range(args.reps)]
            check, lookup, call = (min(r[i] for r in runs) for i in range(3))
            print(
                f"{mode}: interceptors alone, no I/O (best of {args.reps} x {args.direct}): handler lookup "
                f"{lookup:.1f} us + wrapped call {call:.1f} us = {lookup + call:.1f} us CPU per call; "
                f"check_request on a router GenerateRequest (6 messages, EmotionResult) {check:.1f} us"
            )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
