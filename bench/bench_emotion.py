"""Emotion service benchmark: latency, throughput and memory over gRPC on loopback.

    .venv/bin/python bench/bench_emotion.py [--duration 8] [--threads 2] [--max-batch 32] [--max-wait-ms 0]

Starts secantusdb and ``python -m services.emotion`` as child processes (so the server's RSS is
its own), waits for SERVING, then measures with short chat messages (10-40 words):

* single request: sequential Analyze calls, one at a time (p50/p95/p99 at the client);
* single request with a user_id (history read + background write in MongoDB);
* sustained throughput: N concurrent clients calling Analyze back to back (micro-batching on);
* StreamAnalyze: a few chat streams with several messages in flight each;
* AnalyzeBatch: batches of 32;
* server RSS after all of that (and its peak).

Targets (2 CPU cores): p50 <= 10 ms, p95 <= 20 ms, >= 300 messages/s, RSS <= 600 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc  # noqa: E402
from masterx_runtime.clients import channel, wait_until_serving  # noqa: E402
from masterx_runtime.testing.benchstats import cpu_seconds, machine, percentile  # noqa: E402
from masterx_runtime.testing.servers import free_port, start_mongo, wait_for_port  # noqa: E402

SERVICE = "masterx.emotion.v1.EmotionService"

# Short student chat messages, 10-40 words each, written for this benchmark.
MESSAGES = [
    "I don't understand why my for loop runs one extra time at the end of the list.",
    "Okay that makes sense now, thank you for explaining the difference between a list and a tuple.",
    "I've been stuck on this recursion problem for an hour and I'm honestly about to give up on it.",
    "Can you show me another example of how to find the derivative of a product of two functions?",
    "Wow, I actually got the right answer on the first try this time, that feels really good!",
    "I'm really nervous about the calculus exam on Friday because I still mix up the chain rule and the product rule.",
    "This chapter on probability is kind of boring, can we skip to something more interesting please?",
    "Why does Python say that the variable is not defined when I clearly defined it inside the function above?",
    "Thanks, that hint about drawing the triangle first helped a lot with the geometry proof.",
    "I keep getting a different number than the book and I have checked my work three times already.",
    "Could you explain photosynthesis again but more slowly? I got lost somewhere around the light reactions.",
    "That's so cool, I never realised that binary search only needs about twenty steps for a million items.",
    "Honestly I feel stupid, everyone else in my class seems to get this immediately and I just don't.",
    "What is the difference between weather and climate? My teacher said they are not the same thing.",
    "I think I finally get how pointers work in C, the box and arrow drawings really helped me.",
    "Ugh, the compiler error message makes no sense at all and I am getting really annoyed with it.",
    "Can we do one more practice problem on fractions before I try the homework on my own?",
    "I'm worried that if I fail this test my parents will be really disappointed in me.",
    "Let me try to solve it myself first and I will ask you if I get stuck again.",
    "This is the best explanation of the French past tense I have ever heard, merci beaucoup!",
    "Wait, so the mitochondria makes energy for the cell but where does it get the sugar from?",
    "I'm tired and I have been studying for four hours, my brain is not working anymore.",
    "Is it normal that I need to read every paragraph of this history text twice before it makes sense?",
    "Great, now my code passes all the tests except the last one, which times out after ten seconds.",
    "I hate word problems, I never know which numbers I am supposed to use or what the question wants.",
    "Okay, so if I multiply both sides by three the fraction disappears and then x equals seven, right?",
    "Could you check my essay introduction and tell me if the thesis statement is clear enough?",
    "I was confused about matrices yesterday but today it suddenly clicked and I feel much more confident.",
    "Why do we even need to learn the quadratic formula if my calculator can solve the equation for me?",
    "I'm excited to start the machine learning unit next week, I have heard it is really fun.",
    "Sorry, I still don't get it. Can you explain it in a completely different way this time?",
    "The experiment did not work and I have no idea what went wrong with the chemical reaction.",
]


@dataclass
class Row:
    name: str
    requests: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    messages: int = 0
    cpu_ms: float = float("nan")  # server CPU time (user + system) per message

    def line(self) -> str:
        rate = (self.messages or self.requests) / self.seconds if self.seconds else 0.0
        lat = self.latencies_ms
        return (
            f"| {self.name:<50} | {self.requests:>6} | {percentile(lat, 50):>7.2f} | {percentile(lat, 95):>7.2f} | "
            f"{percentile(lat, 99):>7.2f} | {statistics.median(self.server_ms) if self.server_ms else float('nan'):>9.2f} | "
            f"{rate:>8.1f} | {self.cpu_ms:>8.2f} |"
        )


HEADER = (
    f"| {'scenario':<50} | {'calls':>6} | {'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | {'server ms':>9} | "
    f"{'msgs/s':>8} | {'CPU ms/msg':>8} |\n"
    f"|{'-' * 52}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 12}|"
)


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    now = peak = float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, peak


async def sequential(stub: emotion_pb2_grpc.EmotionServiceStub, name: str, n: int, user: str = "") -> Row:
    for m in MESSAGES[:10]:  # warm the path
        await stub.Analyze(emotion_pb2.AnalyzeRequest(text=m, user_id=user))
    row = Row(name, n, 0.0)
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        resp = await stub.Analyze(emotion_pb2.AnalyzeRequest(text=MESSAGES[i % len(MESSAGES)], user_id=user))
        row.latencies_ms.append((time.perf_counter() - t) * 1000)
        row.server_ms.append(resp.result.latency_ms)
    row.seconds = time.perf_counter() - start
    return row


async def concurrent(stub: emotion_pb2_grpc.EmotionServiceStub, clients: int, duration: float) -> Row:
    row = Row(f"Analyze, {clients} concurrent clients", 0, 0.0)
    stop_at = time.perf_counter() + duration

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            resp = await stub.Analyze(emotion_pb2.AnalyzeRequest(text=MESSAGES[i % len(MESSAGES)]))
            row.latencies_ms.append((time.perf_counter() - t) * 1000)
            row.server_ms.append(resp.result.latency_ms)
            i += clients

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    row.seconds = time.perf_counter() - start
    row.requests = len(row.latencies_ms)
    return row


async def streams(stub: emotion_pb2_grpc.EmotionServiceStub, n_streams: int, in_flight: int, duration: float) -> Row:
    row = Row(f"StreamAnalyze, {n_streams} streams x {in_flight} in flight", 0, 0.0)
    stop_at = time.perf_counter() + duration

    async def one(k: int) -> None:
        sent: dict[str, float] = {}
        window = asyncio.Semaphore(in_flight)

        async def requests() -> AsyncIterator[emotion_pb2.AnalyzeRequest]:
            i = 0
            while time.perf_counter() < stop_at:
                await window.acquire()
                rid = f"{k}-{i}"
                sent[rid] = time.perf_counter()
                yield emotion_pb2.AnalyzeRequest(text=MESSAGES[(i + k) % len(MESSAGES)], request_id=rid)
                i += 1

        async for resp in stub.StreamAnalyze(requests()):
            row.latencies_ms.append((time.perf_counter() - sent.pop(resp.request_id)) * 1000)
            row.server_ms.append(resp.result.latency_ms)
            window.release()

    start = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(n_streams)))
    row.seconds = time.perf_counter() - start
    row.requests = len(row.latencies_ms)
    return row


async def batches(stub: emotion_pb2_grpc.EmotionServiceStub, size: int, duration: float) -> Row:
    row = Row(f"AnalyzeBatch of {size}, 2 concurrent callers", 0, 0.0)
    stop_at = time.perf_counter() + duration
    items = [emotion_pb2.AnalyzeRequest(text=MESSAGES[i % len(MESSAGES)]) for i in range(size)]

    async def caller() -> None:
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            resp = await stub.AnalyzeBatch(emotion_pb2.AnalyzeBatchRequest(items=items))
            row.latencies_ms.append((time.perf_counter() - t) * 1000)
            row.server_ms.append(resp.results[0].latency_ms)
            row.messages += len(resp.results)

    start = time.perf_counter()
    await asyncio.gather(caller(), caller())
    row.seconds = time.perf_counter() - start
    row.requests = len(row.latencies_ms)
    return row


def start_server(args: argparse.Namespace, mongo_url: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """``python -m services.emotion`` on free ports, configured from the command line."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "MASTERX_GRPC_PORT": str(port),
        "MASTERX_METRICS_PORT": str(metrics_port),
        "MASTERX_LOG_LEVEL": "WARNING",
        "MONGO_URL": mongo_url,
        "MONGO_DB": "bench_emotion",
        "EMOTION_INTRA_OP_THREADS": str(args.threads),
        "EMOTION_WORKERS": str(args.workers),
        "EMOTION_INTRA_OP_SPINNING": "1" if args.spinning else "0",
        "EMOTION_BATCH_MAX_SIZE": str(args.max_batch),
        "EMOTION_BATCH_MAX_WAIT_MS": str(args.max_wait_ms),
        "EMOTION_BATCH_MODE": args.batch_mode,
    }
    server = subprocess.Popen([sys.executable, "-m", "services.emotion"], cwd=ROOT, env=env)
    wait_for_port("127.0.0.1", port, 60, server)
    return server, port, metrics_port


def batching(metrics_port: int) -> dict[str, object]:
    """The server's batching counters from its JSON health endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/health", timeout=5) as resp:
        return dict(json.loads(resp.read()).get("batching", {}))


async def measure(args: argparse.Namespace, port: int, pid: int) -> list[Row]:
    rows: list[Row] = []
    addr = f"127.0.0.1:{port}"

    async def timed(run: Awaitable[Row]) -> Row:
        before = cpu_seconds(pid)
        row = await run
        row.cpu_ms = (cpu_seconds(pid) - before) * 1000 / max(1, row.messages or row.requests)
        print(row.line(), flush=True)
        return row

    started = time.perf_counter()
    await wait_until_serving(addr, SERVICE, 120)
    async with channel(addr) as chan:
        stub = emotion_pb2_grpc.EmotionServiceStub(chan)
        info = await stub.GetModelInfo(emotion_pb2.GetModelInfoRequest())
        print(
            f"model {info.model_version} ({'int8' if info.quantized else 'fp32'}), parameters "
            f"{info.parameters_version}, providers {list(info.execution_providers)}; "
            f"ready {time.perf_counter() - started:.1f} s after the port opened",
            flush=True,
        )
        print(HEADER, flush=True)
        rows.append(await timed(sequential(stub, "Analyze, one at a time", args.sequential)))
        rows.append(
            await timed(
                sequential(
                    stub, "Analyze with user_id (history on), one at a time", args.sequential // 2, user="bench-student"
                )
            )
        )
        for clients in args.clients:
            rows.append(await timed(concurrent(stub, clients, args.duration)))
        rows.append(await timed(streams(stub, 4, 8, args.duration)))
        rows.append(await timed(batches(stub, 32, args.duration)))
    return rows


def run(args: argparse.Namespace) -> dict[str, object]:
    host = machine()
    mongo = start_mongo()
    server: subprocess.Popen[bytes] | None = None
    try:
        server, port, metrics_port = start_server(args, mongo.url)
        rows = asyncio.run(measure(args, port, server.pid))
        rss, peak = rss_mb(server.pid)
        batch_stats = batching(metrics_port)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        mongo.stop()
    print()
    print(f"machine: {host}")
    print(
        f"settings: EMOTION_INTRA_OP_THREADS={args.threads} EMOTION_WORKERS={args.workers} "
        f"EMOTION_INTRA_OP_SPINNING={int(args.spinning)} EMOTION_BATCH_MAX_SIZE={args.max_batch} "
        f"EMOTION_BATCH_MAX_WAIT_MS={args.max_wait_ms} EMOTION_BATCH_MODE={args.batch_mode}"
    )
    print(HEADER)
    for r in rows:
        print(r.line())
    single = rows[0]
    best = max(rows[2:], key=lambda r: (r.messages or r.requests) / r.seconds)
    best_rate = (best.messages or best.requests) / best.seconds
    checks = [
        ("single-request p50 <= 10 ms", percentile(single.latencies_ms, 50), 10.0, "<="),
        ("single-request p95 <= 20 ms", percentile(single.latencies_ms, 95), 20.0, "<="),
        (f"throughput >= 300 msgs/s ({best.name})", best_rate, 300.0, ">="),
        ("server RSS <= 600 MB (current)", rss, 600.0, "<="),
    ]
    print(f"\nserver RSS {rss:.0f} MB now, {peak:.0f} MB peak; batching over the run: {batch_stats}")
    for label, value, target, op in checks:
        ok = value <= target if op == "<=" else value >= target
        print(f"  [{'PASS' if ok else 'MISS'}] {label}: {value:.1f}")
    return {
        "machine": host,
        "rows": [
            {
                "name": r.name,
                "calls": r.requests,
                "p50_ms": percentile(r.latencies_ms, 50),
                "p95_ms": percentile(r.latencies_ms, 95),
                "p99_ms": percentile(r.latencies_ms, 99),
                "msgs_per_s": (r.messages or r.requests) / r.seconds,
                "server_cpu_ms_per_msg": r.cpu_ms,
            }
            for r in rows
        ],
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "batching": batch_stats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per throughput scenario")
    ap.add_argument("--sequential", type=int, default=300, help="calls in the one-at-a-time scenario")
    ap.add_argument("--clients", type=int, nargs="+", default=[16, 32, 64], help="concurrent client counts")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("EMOTION_INTRA_OP_THREADS", "1")))
    ap.add_argument("--workers", type=int, default=int(os.environ.get("EMOTION_WORKERS", "0")))
    ap.add_argument("--spinning", action="store_true", help="let ONNX Runtime threads spin-wait (its default)")
    ap.add_argument("--max-batch", type=int, default=int(os.environ.get("EMOTION_BATCH_MAX_SIZE", "32")))
    ap.add_argument("--max-wait-ms", type=float, default=float(os.environ.get("EMOTION_BATCH_MAX_WAIT_MS", "0")))
    ap.add_argument(
        "--batch-mode", choices=("auto", "per_text", "padded"), default=os.environ.get("EMOTION_BATCH_MODE", "auto")
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
