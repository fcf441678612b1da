"""Gateway benchmark: overhead per chat turn and /api/v1/emotion throughput.

Starts the whole system as ``masterx up`` does (Redis, MongoDB-wire server, the four services
and the gateway as processes) with the router's providers pointed at the shared test LLM
server (its own process, answering instantly), then measures over HTTP:

* chat overhead: wall time of ``POST /api/v1/chat`` seen by the client minus the provider time
  the router reports (the successful attempt's latency) = everything MasterX adds (emotion
  model, budget, routing, the gateway, four gRPC hops, HTTP). Target p50 <= 25 ms.
* ``/api/v1/emotion`` throughput with concurrent clients. Target >= 200 requests/s.

Run: ``.venv/bin/python bench/bench_gateway.py [--turns 200] [--seconds 10] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from masterx_runtime.testing.benchstats import cpu_seconds, percentile  # noqa: E402
from masterx_runtime.testing.servers import free_port, wait_for_port  # noqa: E402
from tests.gateway.system import emotion_model_dir, gateway_url, start_system, system_env  # noqa: E402

MESSAGES = [
    "What is 2 + 2?",
    "I don't understand recursion at all and it's driving me crazy",
    "Can you explain photosynthesis simply?",
    "How do I reverse a list in Python?",
    "Translate 'good morning' into Spanish",
    "I'm worried I'll fail my exam tomorrow",
    "Why is the sky blue?",
    "This is actually fun, give me a harder one!",
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class CpuMeter:
    """CPU time per process over a measured section (independent of what else loads the machine)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {n: cpu_seconds(p) for n, p in pids.items()}
        self.client_start = time.process_time()

    def per_request_ms(self, requests: int) -> dict[str, float]:
        out = {n: (cpu_seconds(p) - self.start[n]) * 1000 / requests for n, p in self.pids.items()}
        out["bench client"] = (time.process_time() - self.client_start) * 1000 / requests
        return out


def row(name: str, values: list[float], unit: str = "ms") -> str:
    return (
        f"| {name} | {percentile(values, 50):.2f} | {percentile(values, 95):.2f} | {percentile(values, 99):.2f} "
        f"| {statistics.fmean(values):.2f} | {unit} |"
    )


async def chat_overhead(base: str, turns: int) -> dict[str, list[float]]:
    """Sequential chat turns (no concurrency: the latency a student sees)."""
    keys = ("wall", "provider", "overhead", "own", "emotion", "budget", "generate")
    out: dict[str, list[float]] = {k: [] for k in keys}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for i in range(turns + 10):
            body = {"message": MESSAGES[i % len(MESSAGES)], "user_id": f"bench-{i % 20}", "deep_thinking": False}
            start = time.perf_counter()
            resp = await client.post("/api/v1/chat", json=body)
            wall = (time.perf_counter() - start) * 1000
            resp.raise_for_status()
            data = resp.json()
            if data["degraded"]:
                raise RuntimeError(f"degraded chat turn: {data['degraded']}")
            if i < 10:
                continue  # warm-up
            t = data["timings_ms"]
            out["wall"].append(wall)
            out["provider"].append(t["provider_ms"])
            out["overhead"].append(wall - t["provider_ms"])
            out["own"].append(wall - t["emotion_ms"] - t["budget_ms"] - t["generate_ms"])
            out["emotion"].append(t["emotion_ms"])
            out["budget"].append(t["budget_ms"])
            out["generate"].append(t["generate_ms"])
    return out


async def emotion_throughput(base: str, seconds: float, concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(n: int, client: httpx.AsyncClient) -> None:
        nonlocal errors
        i = n
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            resp = await client.post("/api/v1/emotion", json={"text": MESSAGES[i % len(MESSAGES)]})
            latencies.append((time.perf_counter() - start) * 1000)
            if resp.status_code != 200:
                errors += 1
            i += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        for _ in range(20):  # warm-up
            (await client.post("/api/v1/emotion", json={"text": "warm up"})).raise_for_status()
        began = time.perf_counter()
        await asyncio.gather(*(worker(n, client) for n in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies, errors


def start_fake_llm() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "masterx_runtime.testing.fake_llm", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, 15, proc)
    return proc, f"http://127.0.0.1:{port}"


def providers_for(url: str) -> list[dict[str, Any]]:
    for name in ("fast", "smart"):
        httpx.post(f"{url}/_control/{name}", json={"default_reply": f"A short answer from {name}."}).raise_for_status()
    return [
        {"name": "fast", "kind": "openai", "base_url": f"{url}/p/fast/v1", "model": "fast-model",
         "input_price_per_mtok": 0.15, "output_price_per_mtok": 0.6},
        {"name": "smart", "kind": "anthropic", "base_url": f"{url}/p/smart", "model": "smart-model",
         "input_price_per_mtok": 3.0, "output_price_per_mtok": 15.0},
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=200, help="chat turns measured (after 10 warm-up turns)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the emotion throughput run")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients for the emotion run")
    args = parser.parse_args()
    if emotion_model_dir() is None:
        sys.exit("no emotion model yet: run `make train-emotion` or set EMOTION_TEST_MODEL_DIR")

    fake, fake_url = start_fake_llm()
    state = Path(tempfile.mkdtemp(prefix="masterx-bench-gateway-"))
    env = system_env(providers_for(fake_url), GATEWAY_RATE_LIMIT_PER_MINUTE="10000000", MASTERX_LOG_LEVEL="WARNING")
    print("starting the system (redis, mongodb-wire, 4 services, gateway) ...", flush=True)
    system = start_system(state, env)
    try:
        base = gateway_url(system)
        gw_pid = system.children["gateway"].proc.pid
        pids = {n: system.children[n].proc.pid for n in ("gateway", "emotion", "reasoning", "router", "redis")}
        pids["llm test server"] = fake.pid
        meter = CpuMeter(pids)
        chat = asyncio.run(chat_overhead(base, args.turns))
        chat_cpu = meter.per_request_ms(args.turns + 10)
        meter = CpuMeter(pids)
        rps, lat, errors = asyncio.run(emotion_throughput(base, args.seconds, args.concurrency))
        emotion_cpu = meter.per_request_ms(len(lat) + 20)
        gw_rss = rss_mb(gw_pid)
        load1, load5, _ = os.getloadavg()
    finally:
        system.stop()
        fake.terminate()
        fake.wait(10)

    print("\n## Gateway benchmark (2-core x86-64 VM, no GPU; provider = test server answering instantly)\n")
    print(f"chat turns: {len(chat['wall'])} sequential, deep thinking off, rate limiter on (Redis)")
    print(f"machine load average during the run: {load1:.1f} (1 min), {load5:.1f} (5 min) on {os.cpu_count()} cores\n")
    print("| measure | p50 | p95 | p99 | mean | unit |")
    print("|---|---|---|---|---|---|")
    print(row("chat turn, wall time at the client", chat["wall"]))
    print(row("provider time (router-reported)", chat["provider"]))
    print(row("**overhead per turn (wall - provider)**", chat["overhead"]))
    print(row("  stage: emotion Analyze", chat["emotion"]))
    print(row("  stage: reasoning AllocateBudget", chat["budget"]))
    print(row("  stage: router Generate", chat["generate"]))
    print(row("  gateway + HTTP + client (wall - the three stages)", chat["own"]))
    print(row(f"/api/v1/emotion latency at {args.concurrency} concurrent", lat))
    print(f"\n/api/v1/emotion throughput: **{rps:.0f} requests/s** ({len(lat)} requests in {args.seconds:.0f} s, "
          f"{args.concurrency} concurrent clients, {errors} errors)")  # fmt: skip
    print(f"gateway process memory (RSS) after the run: {gw_rss:.0f} MiB")
    print("\nCPU time per request by process (ms; what the 2 cores must supply, whatever else runs):\n")
    print("| process | chat turn | /api/v1/emotion |")
    print("|---|---|---|")
    for name in chat_cpu:
        print(f"| {name} | {chat_cpu[name]:.2f} | {emotion_cpu[name]:.2f} |")
    total_emotion = sum(v for k, v in emotion_cpu.items() if k != "bench client")
    print(f"| **all MasterX processes** | {sum(v for k, v in chat_cpu.items() if k != 'bench client'):.2f} "
          f"| {total_emotion:.2f} |")  # fmt: skip
    print(
        f"\n/api/v1/emotion capacity of 2 idle cores from CPU cost (client excluded): {2000 / total_emotion:.0f} requests/s"
    )
    p50 = percentile(chat["overhead"], 50)
    print(f"\ntargets: overhead p50 <= 25 ms: {'met' if p50 <= 25 else 'MISSED'} ({p50:.1f} ms); "
          f"emotion >= 200 req/s: {'met' if rps >= 200 else 'MISSED'} ({rps:.0f})")  # fmt: skip
    print(json.dumps({"overhead_p50_ms": round(p50, 2), "emotion_rps": round(rps, 1)}))


if __name__ == "__main__":
    main()
