"""Router benchmarks: decision latency, breaker check, Redis sessions, overhead at 200 concurrent streams.

Run: ``.venv/bin/python bench/bench_router.py`` (1-2 minutes on 2 cores). It starts its own
Redis and secantusdb (``masterx_runtime.testing.servers``), the fake LLM server and the router
service as separate processes, and prints a table. Targets (issue 4):

* selection decision (decision.decide, 10 providers, category probabilities given): p99 <= 1 ms
* category for a direct call with no emotion result: p50 <= 6 ms (``--emotion-addr`` measures it
  through a running emotion service; without it, the TF-IDF fallback)
* session continuity over ``bench/data/router_conversations.yaml``: >= 95% of same-topic turns
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

import redis.asyncio as aioredis
import yaml

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.clients import channel, wait_until_serving
from masterx_runtime.config import load
from masterx_runtime.testing.benchstats import cpu_seconds, percentile
from masterx_runtime.testing.servers import free_port, start_mongo, start_redis
from services.router.app import breaker_config
from services.router.breaker import BreakerBoard
from services.router.category import CategoryDetector
from services.router.classifier.model import CategoryClassifier
from services.router.config import RouterSettings
from services.router.decision import Inputs, ProviderView, decide
from services.router.domain import RouteRequest
from services.router.engine import Router
from services.router.ledger import CostLedger, RateLimiter
from services.router.policy import load_policy
from services.router.priors import load_priors
from services.router.providers.base import ProviderSpec
from services.router.providers.http import make_http_client
from services.router.providers.registry import build_provider
from services.router.scores import ScoreBook
from services.router.servicer import analyze_scores, route_request
from services.router.sessions import SessionStore, advance, judge_topic
from services.router.training.train_classifier import load_dataset

ROOT = Path(__file__).resolve().parents[1]
STREAMS = 200  # streams in flight at once
LIGHT = 50  # a lighter load, to tell the router's own overhead from CPU queueing
TTFT_MS = 400
TOKENS = 20
TOKENS_PER_SECOND = 10
STREAM_SECONDS = TTFT_MS / 1000 + (TOKENS - 1) / TOKENS_PER_SECOND
SECONDS = 12.0  # per path (direct, then through the router)
RUNS = 5  # runs over the scripted conversations


def row(name: str, unit: str, values: Sequence[float], target: str = "") -> str:
    return f"| {name:<58} | {percentile(values, 50):>9.3f} | {percentile(values, 95):>9.3f} | {percentile(values, 99):>9.3f} | {unit:<4} | {target}"


HEADER = (
    f"| {'measurement':<58} | {'p50':>9} | {'p95':>9} | {'p99':>9} | unit | target / notes\n"
    f"|{'-' * 60}|{'-' * 11}|{'-' * 11}|{'-' * 11}|------|------"
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def provider_specs() -> list[ProviderSpec]:
    """Ten providers: five with published priors (priors.yaml), five from a providers file."""
    models = ["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest", "gemini-2.0-flash", "llama-3.1-8b-instant"]
    specs = []
    for i in range(10):
        quality = {} if i < 5 else {"default": 40 + 5 * i, "coding": 90 - 4 * i}
        specs.append(
            ProviderSpec(
                name=f"p{i}",
                kind="openai",
                model=models[i] if i < 5 else f"m{i}",
                base_url="http://127.0.0.1:9/v1",
                input_price_per_mtok=0.1 * (i + 1),
                output_price_per_mtok=0.4 * (i + 1),
                quality=quality,
                speed=30 + 6 * i,
            )
        )
    return specs


async def make_router(redis: aioredis.Redis, mongo_db: Any, emotion_addr: str) -> tuple[Router, BreakerBoard, Any]:
    cfg = load(RouterSettings, {"ROUTER_CATEGORY_EMOTION_ADDR": emotion_addr})
    policy = load_policy()
    specs = provider_specs()
    http = make_http_client()
    providers = {s.name: build_provider(s, http, {}) for s in specs}
    breakers = BreakerBoard(redis, providers, breaker_config(cfg), key_prefix="bench:")
    await breakers.start()
    detector = CategoryDetector(
        CategoryClassifier(),
        emotion_addr=emotion_addr,
        timeout_seconds=cfg.category_timeout_ms / 1000,
        retry_seconds=cfg.category_retry_seconds,
        convert=analyze_scores,
    )
    book = ScoreBook(specs, load_priors(), unknown_quality=policy.unknown_quality, default_speed=policy.default_speed)
    router = Router(
        cfg,
        policy,
        providers,
        breakers=breakers,
        sessions=SessionStore(redis, key_prefix="bench:"),
        book=book,
        ledger=CostLedger(mongo_db, redis, key_prefix="bench:"),
        limiter=RateLimiter(redis, {}, key_prefix="bench:"),
        detector=detector,
    )
    return router, breakers, http


def chat_request(text: str, **fields: Any) -> RouteRequest:
    return route_request(
        router_pb2.GenerateRequest(messages=[common_pb2.ChatMessage(role="user", content=text)], **fields)
    )


async def bench_decision(redis_url: str, mongo_db: Any, prompts: list[str], emotion_addr: str) -> list[str]:
    """The decision with 10 providers, the category of a direct call, breakers and sessions."""
    redis = aioredis.Redis.from_url(redis_url)
    router, breakers, http = await make_router(redis, mongo_db, emotion_addr)
    rng = random.Random(7)

    def probs() -> common_pb2.EmotionResult:
        raw = [rng.random() ** 3 for _ in range(6)]
        total = sum(raw)
        cats = range(1, 7)
        return common_pb2.EmotionResult(
            category_scores=[
                common_pb2.CategoryScore(category=c, probability=p / total)  # type: ignore[arg-type]
                for c, p in zip(cats, raw, strict=True)
            ],
            followup_probability=rng.random() * 0.3,
            learning_state=common_pb2.LEARNING_STATE_FRUSTRATED if rng.random() < 0.1 else 0,  # type: ignore[arg-type]
        )

    # the chat-turn shape: category probabilities arrive with the request (no model runs)
    requests = [chat_request(p, cost_quality=0.6, emotion=probs()) for p in prompts[:2000]]
    for r in requests[:50]:
        await router.plan(r)
    pure, planned = [], []
    for i in range(3000):
        req = requests[i % len(requests)]
        t = time.perf_counter()
        await router.plan(req)
        planned.append((time.perf_counter() - t) * 1000)
    plan = await router.plan(requests[0])
    inputs_ = Inputs(
        category=plan.decision.category,
        text=requests[0].text,
        complexity=plan.decision.complexity,
        providers=[
            ProviderView(n, p.spec.model, router.book.table[n], router.breakers.state_for_ranking(n))
            for n, p in router.providers.items()
        ],
        weights=router.book.weights,
        cost_quality=0.6,
    )
    for _ in range(5000):
        t = time.perf_counter()
        decide(inputs_, router.policy, router.knobs)
        pure.append((time.perf_counter() - t) * 1000)

    # a direct gRPC call with no emotion result: the router finds the category itself
    direct = [chat_request(p) for p in prompts[:2000]]
    category_ms = []
    for i in range(2000 if emotion_addr else 3000):
        req = direct[i % len(direct)]
        t = time.perf_counter()
        scores = await router.category(req)
        category_ms.append((time.perf_counter() - t) * 1000)
    source = scores.source.value

    # breaker: the local check, and acquire() on a CLOSED breaker (no network)
    check_us, acquire_us = [], []
    names = list(router.providers)
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
    p6 = [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]
    sess_ms = []
    for i in range(3000):
        sid = f"s{i % 500}"
        t = time.perf_counter()
        s = await store.load(sid)
        verdict = judge_topic(s, "coding", 0.9, p6, min_confidence=0.45, similarity_threshold=0.5)
        await store.save(advance(s, verdict, p6, "p1", history_limit=50))
        sess_ms.append((time.perf_counter() - t) * 1000)
    lines = [
        row("selection decision, 10 providers (decide(), pure)", "ms", pure, "p99 <= 1 ms"),
        row("Router.plan, 10 providers, category in the request", "ms", planned, "includes complexity estimate"),
        row(f"category, direct call with no emotion result ({source})", "ms", category_ms, "p50 <= 6 ms"),
        row("breaker check (local state)", "us", check_us, "<= 20 us"),
        row("breaker acquire, CLOSED (local, awaited)", "us", acquire_us, "<= 20 us"),
        row("breaker record (Lua script in Redis, write-through)", "ms", record_ms, "after each call"),
        row("session read + topic check + write (Redis loopback)", "ms", sess_ms, "p99 <= 2 ms"),
    ]
    lines += await bench_continuity(router)
    await router.detector.close()
    await breakers.stop()
    await http.aclose()
    await redis.aclose()
    return lines


async def bench_continuity(router: Router) -> list[str]:
    """Session continuity over the scripted conversations (real Redis sessions, no provider call).

    Each turn is routed as a direct call (the router finds the category itself) with a random
    cost_quality in [0.2, 0.8], so without continuity the choice would often move; the session
    is then advanced as if the chosen provider had answered.
    """
    doc = yaml.safe_load((ROOT / "bench" / "data" / "router_conversations.yaml").read_text())
    kept = same = changed = new = 0
    shares = []
    for seed in range(RUNS):  # each run draws other knobs, so the choice would move differently
        rng = random.Random(seed)
        run_kept = run_same = 0
        for n, conversation in enumerate(doc["conversations"]):
            sid = f"conv-{seed}-{n}"
            previous = ""
            for i, (kind, text) in enumerate(conversation):
                plan = await router.plan(chat_request(text, session_id=sid, cost_quality=rng.uniform(0.2, 0.8)))
                d = plan.decision
                if i > 0 and kind == "same":
                    run_same += 1
                    run_kept += d.provider == previous
                elif i > 0:
                    new += 1
                    changed += d.topic.changed
                await router.books.save_session(plan, d.provider)
                previous = d.provider
        kept, same = kept + run_kept, same + run_same
        shares.append(run_kept / max(run_same, 1))
    return [
        f"| session continuity: same-topic turns kept on the session's provider | {kept}/{same} = "
        f"{kept / max(same, 1):.1%} over {RUNS} runs (worst run {min(shares):.1%}) | target >= 95%",
        f"| topic changes re-routed | {changed}/{new} = {changed / max(new, 1):.1%} | ",
    ]


def fake_server(port: int, behaviors: dict[str, Any], tmp: Path) -> subprocess.Popen[bytes]:
    config = tmp / "fake.json"
    config.write_text(json.dumps({"providers": behaviors}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "masterx_runtime.testing.fake_llm", "--port", str(port), "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


async def direct_stream(host: str, port: int, path: str, prompt: str) -> tuple[float, float]:
    """(ttft ms, total ms) streaming straight from the fake provider with a minimal raw HTTP client.

    A bare socket client (no pool, no parsing beyond finding the first token and the last
    chunk) keeps the bench process's own CPU out of the provider's latency.
    """
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": True, "max_tokens": 64}
    ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(head + body)
    ttft = 0.0
    seen = b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        seen = seen[-64:] + data
        if not ttft and b'"content": "word' in seen:
            ttft = (time.perf_counter() - started) * 1000
        if seen.endswith(b"0\r\n\r\n"):
            break
    writer.close()
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


async def closed_loop(
    run_one: Any, seconds: float, prompts: list[str], streams: int = STREAMS
) -> tuple[list[tuple[float, float]], float]:
    """``streams`` workers, each starting a new stream when its last one ends, for ``seconds``.

    Starts are spread over the first stream's length, so the load is a steady 200 streams in
    flight rather than one synchronised burst. Returns (ttft ms, total ms) per stream and wall time.
    """
    results: list[tuple[float, float]] = []
    rng = random.Random(7)
    started = time.perf_counter()
    stop_at = started + seconds

    async def worker(i: int) -> None:
        await asyncio.sleep(rng.uniform(0, STREAM_SECONDS))
        n = 0
        while time.perf_counter() < stop_at:
            results.append(await run_one(prompts[(i * 31 + n) % len(prompts)], f"w{i}-{n % 3}"))
            n += 1

    await asyncio.gather(*(worker(i) for i in range(streams)))
    return results, time.perf_counter() - started


async def bench_streams(redis_url: str, mongo_url: str, prompts: list[str], tmp: Path) -> list[str]:
    port = free_port()
    reply = " ".join(["word"] * TOKENS)
    behavior = {"ttft_ms": TTFT_MS, "tokens_per_second": TOKENS_PER_SECOND, "default_reply": reply}
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
        "ROUTER_CATEGORY_EMOTION_ADDR": "",
        "MASTERX_GRPC_PORT": str(grpc_port),
        "MASTERX_METRICS_PORT": "-1",
        "MASTERX_LOG_LEVEL": "ERROR",
    }
    router = subprocess.Popen([sys.executable, "-m", "services.router"], cwd=ROOT, env=env)  # noqa: ASYNC220
    try:
        await wait_until_serving(f"127.0.0.1:{grpc_port}", "masterx.router.v1.RouterService", timeout=60)
        path = "/p/fast/v1/chat/completions"
        async with channel(f"127.0.0.1:{grpc_port}") as chan:
            stub = router_pb2_grpc.RouterServiceStub(chan)
            await asyncio.gather(*(direct_stream("127.0.0.1", port, path, "warm up") for _ in range(20)))
            await asyncio.gather(*(router_stream(stub, "warm up", f"w{i}") for i in range(20)))
            direct, wall_direct = await closed_loop(
                lambda p, _s: direct_stream("127.0.0.1", port, path, p), SECONDS, prompts
            )
            cpu = cpu_seconds(router.pid)
            routed, wall_router = await closed_loop(lambda p, s: router_stream(stub, p, s), SECONDS, prompts)
            router_cpu = cpu_seconds(router.pid) - cpu
            light_direct, _ = await closed_loop(
                lambda p, _s: direct_stream("127.0.0.1", port, path, p), SECONDS / 2, prompts, LIGHT
            )
            light_routed, _ = await closed_loop(lambda p, s: router_stream(stub, p, s), SECONDS / 2, prompts, LIGHT)
        d_ttft, d_total = [x[0] for x in direct], [x[1] for x in direct]
        r_ttft, r_total = [x[0] for x in routed], [x[1] for x in routed]
        overhead_ttft = statistics.median(r_ttft) - statistics.median(d_ttft)
        overhead_total = statistics.median(r_total) - statistics.median(d_total)
        shape = f"ttft {TTFT_MS} ms, {TOKENS} tokens at {TOKENS_PER_SECOND}/s"
        light_ttft = statistics.median(x[0] for x in light_routed) - statistics.median(x[0] for x in light_direct)
        light_total = statistics.median(x[1] for x in light_routed) - statistics.median(x[1] for x in light_direct)
        return [
            row(f"provider alone: time to first token, {STREAMS} in flight", "ms", d_ttft, f"fake: {shape}"),
            row(f"through the router: time to first token, {STREAMS} in flight", "ms", r_ttft, ""),
            row(f"provider alone: whole stream, {STREAMS} in flight", "ms", d_total, ""),
            row(f"through the router: whole stream, {STREAMS} in flight", "ms", r_total, ""),
            f"| router overhead, {STREAMS} concurrent streams (p50 router - p50 direct): first token "
            f"{overhead_ttft:+.1f} ms, whole stream {overhead_total:+.1f} ms (target p50 <= 5 ms)",
            row(f"through the router: time to first token, {LIGHT} in flight", "ms", [x[0] for x in light_routed], ""),
            f"| router overhead, {LIGHT} concurrent streams: first token {light_ttft:+.1f} ms, whole stream "
            f"{light_total:+.1f} ms",
            f"| {len(routed)} routed streams in {wall_router:.0f} s ({len(routed) / wall_router:.0f}/s; direct "
            f"{len(direct) / wall_direct:.0f}/s); router CPU {router_cpu / len(routed) * 1000:.1f} ms per streamed "
            f"answer; router RSS {rss_mb(router.pid):.0f} MB",
        ]
    finally:
        router.terminate()
        router.wait(15)
        fake.terminate()
        fake.wait(10)


async def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--emotion-addr",
        default="",
        help="host:port of a running emotion service with a category head: measure the direct-call "
        "category through it (default: the TF-IDF fallback alone)",
    )
    parser.add_argument("--skip-streams", action="store_true", help="skip the 200-stream overhead part")
    args = parser.parse_args()

    from pymongo import AsyncMongoClient

    redis = start_redis()
    mongo = start_mongo()
    try:
        xtr, _, xte, _ = load_dataset()
        prompts = xtr + xte
        client: AsyncMongoClient[Any] = AsyncMongoClient(mongo.url)
        started = time.perf_counter()
        lines = await bench_decision(redis.url, client["bench_router"], prompts, args.emotion_addr)
        await client.close()
        if not args.skip_streams:
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
