"""Router benchmarks: decision latency, breaker check, Redis sessions, overhead at 200 concurrent streams.

Run: ``.venv/bin/python bench/bench_router.py`` (1-2 minutes on 2 cores). It starts its own
Redis and secantusdb (``masterx_runtime.testing.servers``), the fake LLM server and the router
service as separate processes, and prints a table. Targets (issue 4):

* selection decision (classify + rank + decision, 10 providers): p99 <= 1 ms
* breaker check: <= 20 us
* session read + write against Redis on loopback: p99 <= 2 ms
* router overhead over the provider's own latency at 200 concurrent streams: p50 <= 5 ms
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import redis.asyncio as aioredis

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.clients import channel, wait_until_serving
from masterx_runtime.testing.servers import free_port, start_mongo, start_redis
from services.router.app import breaker_config
from services.router.breaker import BreakerBoard
from services.router.classifier.model import CategoryClassifier
from services.router.classifier.train import load_dataset
from services.router.config import RouterSettings
from services.router.engine import Router
from services.router.ledger import CostLedger, RateLimiter
from services.router.providers.base import ProviderSpec
from services.router.providers.http import make_http_client
from services.router.providers.registry import build_provider
from services.router.scores import ScoreBook
from services.router.sessions import SessionStore, advance, judge_topic

ROOT = Path(__file__).resolve().parents[1]
STREAMS = 200
ROUNDS = 3


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row(name: str, unit: str, values: Sequence[float], target: str = "") -> str:
    return f"| {name:<58} | {pct(values, 50):>9.3f} | {pct(values, 95):>9.3f} | {pct(values, 99):>9.3f} | {unit:<4} | {target}"


HEADER = (
    f"| {'measurement':<58} | {'p50':>9} | {'p95':>9} | {'p99':>9} | unit | target / notes\n"
    f"|{'-' * 60}|{'-' * 11}|{'-' * 11}|{'-' * 11}|------|------"
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def bench_decision(redis_url: str, mongo_db: Any, prompts: list[str]) -> list[str]:
    """Router.plan() with 10 providers, no session: classifier + ranking + decision proto."""
    cfg = RouterSettings()
    specs = [
        ProviderSpec(
            name=f"p{i}",
            kind="openai",
            model=f"m{i}",
            base_url="http://127.0.0.1:9/v1",
            input_price_per_mtok=0.1 * (i + 1),
            output_price_per_mtok=0.4 * (i + 1),
            quality={"default": 40 + 5 * i, "coding": 90 - 4 * i},
            speed=30 + 6 * i,
        )
        for i in range(10)
    ]
    redis = aioredis.Redis.from_url(redis_url)
    http = make_http_client()
    providers = {s.name: build_provider(s, http, {}) for s in specs}
    breakers = BreakerBoard(redis, providers, breaker_config(cfg), key_prefix="bench:")
    await breakers.start()
    router = Router(
        cfg,
        providers,
        breakers=breakers,
        sessions=SessionStore(redis, key_prefix="bench:"),
        book=ScoreBook(specs),
        ledger=CostLedger(mongo_db, redis, key_prefix="bench:"),
        limiter=RateLimiter(redis, {}, key_prefix="bench:"),
        classifier=CategoryClassifier(),
    )
    requests = [
        router_pb2.GenerateRequest(messages=[common_pb2.ChatMessage(role="user", content=p)], cost_quality=0.6)
        for p in prompts
    ]
    emotion = common_pb2.EmotionResult(learning_state=common_pb2.LEARNING_STATE_FRUSTRATED)
    for r in requests[:50]:
        await router.plan(r)
    times, classify, rank_only = [], [], []
    for i in range(3000):
        req = requests[i % len(requests)]
        if i % 10 == 0:
            req = router_pb2.GenerateRequest(messages=req.messages, emotion=emotion)
        t = time.perf_counter()
        await router.plan(req)
        times.append((time.perf_counter() - t) * 1000)
        text = req.messages[-1].content
        t = time.perf_counter()
        router.classifier.predict(text)
        classify.append((time.perf_counter() - t) * 1000)
    hinted = [router_pb2.GenerateRequest(messages=r.messages, category=common_pb2.CATEGORY_CODING) for r in requests]
    for i in range(3000):
        t = time.perf_counter()
        await router.plan(hinted[i % len(hinted)])
        rank_only.append((time.perf_counter() - t) * 1000)

    # breaker: the local check, and acquire() on a CLOSED breaker (no network)
    check_us, acquire_us = [], []
    names = list(providers)
    for i in range(20000):
        name = names[i % 10]
        t = time.perf_counter()
        breakers.check(name)
        check_us.append((time.perf_counter() - t) * 1e6)
    for i in range(20000):
        name = names[i % 10]
        t = time.perf_counter()
        await breakers.acquire(name)
        acquire_us.append((time.perf_counter() - t) * 1e6)
    record_ms = []
    permit = await breakers.acquire("p0")
    for _ in range(2000):
        t = time.perf_counter()
        await breakers.record("p0", permit, ok=True, seconds=0.1)
        record_ms.append((time.perf_counter() - t) * 1000)

    # sessions: read + write one session (the per-request cost) against Redis on loopback
    store = SessionStore(redis, key_prefix="bench:", ttl_seconds=600)
    probs = [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]
    sess_ms = []
    for i in range(3000):
        sid = f"s{i % 500}"
        t = time.perf_counter()
        s = await store.load(sid)
        verdict = judge_topic(s, "coding", 0.9, probs, min_confidence=0.45, similarity_threshold=0.5)
        await store.save(advance(s, verdict, probs, "p1", history_limit=50))
        sess_ms.append((time.perf_counter() - t) * 1000)
    await breakers.stop()
    await http.aclose()
    await redis.aclose()
    return [
        row("selection decision, 10 providers (classify + rank)", "ms", times, "p99 <= 1 ms"),
        row("  of which: category classifier", "ms", classify, ""),
        row("selection decision with a category hint (rank only)", "ms", rank_only, ""),
        row("breaker check (local state)", "us", check_us, "<= 20 us"),
        row("breaker acquire, CLOSED (local, awaited)", "us", acquire_us, "<= 20 us"),
        row("breaker record (Lua script in Redis, write-through)", "ms", record_ms, "after each call"),
        row("session read + topic check + write (Redis loopback)", "ms", sess_ms, "p99 <= 2 ms"),
    ]


def fake_server(port: int, behaviors: dict[str, Any], tmp: Path) -> subprocess.Popen[bytes]:
    config = tmp / "fake.json"
    config.write_text(json.dumps({"providers": behaviors}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.router.testserver", "--port", str(port), "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


async def direct_stream(client: httpx.AsyncClient, url: str, prompt: str) -> tuple[float, float]:
    """(ttft ms, total ms) streaming straight from the fake provider."""
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": True, "max_tokens": 64}
    started = time.perf_counter()
    ttft = 0.0
    async with client.stream("POST", url, json=body) as r:
        async for line in r.aiter_lines():
            if not ttft and '"content": "' in line and '"content": ""' not in line:
                ttft = (time.perf_counter() - started) * 1000
    return ttft, (time.perf_counter() - started) * 1000


async def router_stream(stub: router_pb2_grpc.RouterServiceStub, prompt: str, session: str) -> tuple[float, float]:
    req = router_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content=prompt)],
        user_id="bench",
        session_id=session,
        max_tokens=64,
    )
    started = time.perf_counter()
    ttft = 0.0
    async for chunk in stub.GenerateStream(req, timeout=60):
        if not ttft and chunk.WhichOneof("kind") == "delta":
            ttft = (time.perf_counter() - started) * 1000
    return ttft, (time.perf_counter() - started) * 1000


async def bench_streams(redis_url: str, mongo_url: str, prompts: list[str], tmp: Path) -> list[str]:
    port = free_port()
    reply = " ".join(["word"] * 20)
    behavior = {"ttft_ms": 100, "tokens_per_second": 100, "default_reply": reply}
    fake = fake_server(port, {"fast": behavior}, tmp)
    grpc_port = free_port()
    providers = [{"name": "fast", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/p/fast/v1", "model": "m"}]
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": "benchstream:",
        "MONGO_URL": mongo_url,
        "MONGO_DB": "bench_router",
        "ROUTER_PROVIDERS_JSON": json.dumps(providers),
        "ROUTER_LOCAL_PROVIDER": "off",
        "ROUTER_DISCOVER_ENV_KEYS": "0",
        "ROUTER_SCORES_ENABLED": "0",
        "MASTERX_GRPC_PORT": str(grpc_port),
        "MASTERX_METRICS_PORT": "-1",
        "MASTERX_LOG_LEVEL": "ERROR",
    }
    router = subprocess.Popen([sys.executable, "-m", "services.router"], cwd=ROOT, env=env)  # noqa: ASYNC220
    try:
        await wait_until_serving(f"127.0.0.1:{grpc_port}", "masterx.router.v1.RouterService", timeout=60)
        url = f"http://127.0.0.1:{port}/p/fast/v1/chat/completions"
        limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=STREAMS + 10)
        lines: list[str] = []
        async with httpx.AsyncClient(timeout=60, limits=limits) as client, channel(f"127.0.0.1:{grpc_port}") as chan:
            stub = router_pb2_grpc.RouterServiceStub(chan)
            await asyncio.gather(*(direct_stream(client, url, "warm up") for _ in range(20)))
            await asyncio.gather(*(router_stream(stub, "warm up", f"w{i}") for i in range(20)))
            d_ttft, d_total, r_ttft, r_total = [], [], [], []
            wall_direct, wall_router = 0.0, 0.0
            for round_no in range(ROUNDS):
                sample = random.Random(round_no).sample(prompts, STREAMS)
                t = time.perf_counter()
                direct = await asyncio.gather(*(direct_stream(client, url, p) for p in sample))
                wall_direct += time.perf_counter() - t
                t = time.perf_counter()
                routed = await asyncio.gather(
                    *(router_stream(stub, p, f"r{round_no}-{i % 50}") for i, p in enumerate(sample))
                )
                wall_router += time.perf_counter() - t
                d_ttft += [x[0] for x in direct]
                d_total += [x[1] for x in direct]
                r_ttft += [x[0] for x in routed]
                r_total += [x[1] for x in routed]
            overhead_ttft = statistics.median(r_ttft) - statistics.median(d_ttft)
            overhead_total = statistics.median(r_total) - statistics.median(d_total)
            n = STREAMS * ROUNDS
            lines += [
                row(f"provider alone: time to first token ({STREAMS} concurrent)", "ms", d_ttft, "fake: ttft 100 ms"),
                row(f"through the router: time to first token ({STREAMS} conc.)", "ms", r_ttft, ""),
                row(f"provider alone: whole stream, 20 tokens ({STREAMS} conc.)", "ms", d_total, "100 tokens/s"),
                row(f"through the router: whole stream ({STREAMS} concurrent)", "ms", r_total, ""),
                f"| router overhead at {STREAMS} concurrent streams (p50 difference): first token {overhead_ttft:.1f} ms, "
                f"whole stream {overhead_total:.1f} ms (target p50 <= 5 ms)",
                f"| throughput: {n / wall_router:.0f} streamed answers/s through the router "
                f"({n / wall_direct:.0f}/s direct); router RSS {rss_mb(router.pid):.0f} MB",
            ]
    finally:
        router.terminate()
        router.wait(15)
        fake.terminate()
        fake.wait(10)
    return lines


async def main() -> None:
    import tempfile

    from pymongo import AsyncMongoClient

    redis = start_redis()
    mongo = start_mongo()
    try:
        xtr, _, xte, _ = load_dataset()
        prompts = xtr + xte
        client: AsyncMongoClient[Any] = AsyncMongoClient(mongo.url)
        started = time.perf_counter()
        lines = await bench_decision(redis.url, client["bench_router"], prompts)
        await client.close()
        with tempfile.TemporaryDirectory() as tmp:
            lines += await bench_streams(redis.url, mongo.url, prompts, Path(tmp))
        print(f"\nRouter benchmarks ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})\n")
        print(HEADER)
        print("\n".join(lines))
        print(f"\nfinished in {time.perf_counter() - started:.0f} s")
    finally:
        redis.stop()
        mongo.stop()


if __name__ == "__main__":
    asyncio.run(main())
