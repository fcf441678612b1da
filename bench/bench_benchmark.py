"""Benchmark service benchmark: a full scheduled run of all six suites for three providers.

    .venv/bin/python bench/bench_benchmark.py [--concurrency 4] [--max-items 0]

Starts Redis, secantusdb, the shared test LLM server and the REAL router as child processes,
and the benchmark service in this process (so its MongoDB write time and scheduler overhead
can be read off its own counters). Three fake providers differ in speed, error rate, price and
correctness:

* ``fast``:   20 ms latency, no errors, answers every item with its reference answer;
* ``steady``: 60 ms latency + 5 ms to first token, 5 % HTTP 500, correct on 70 % of items;
* ``slow``:   150 ms latency, 400 tokens/s streaming, 10 % HTTP 429, correct on 40 % of items.

The scheduler (BENCHMARK_SCHEDULE_HOURS > 0, nothing run yet) starts the run; the script
watches it over gRPC to the end and prints: run wall time (target <= 60 s on 2 cores), item
throughput, provider latency and time-to-first-token percentiles as the router reports them,
time per item in the service (router call + scoring), sandbox runs, MongoDB write time (item
batches + scores), scheduler overhead (the launching tick and idle ticks), the resulting
leaderboards and peak memory of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc  # noqa: E402
from masterx.common.v1 import common_pb2  # noqa: E402
from masterx_runtime.clients import channel, wait_until_serving  # noqa: E402
from masterx_runtime.server import GrpcServer  # noqa: E402
from masterx_runtime.settings import PeerSettings, ServerSettings  # noqa: E402
from masterx_runtime.stores.mongo_store import MongoSettings  # noqa: E402
from masterx_runtime.testing.benchstats import percentile  # noqa: E402
from masterx_runtime.testing.fake_llm import ProviderBehavior  # noqa: E402
from masterx_runtime.testing.servers import free_port, start_mongo, start_redis, wait_for_port  # noqa: E402
from services.benchmark.app import BenchmarkApp  # noqa: E402
from services.benchmark.config import BenchmarkSettings  # noqa: E402
from services.benchmark.store import ITEMS  # noqa: E402
from services.benchmark.suite import SuiteItem, load_suites  # noqa: E402
from tests.benchmark.harness import item_rules, wrong_answer  # noqa: E402

PYTHON = sys.executable


def _share_correct(share: float):  # type: ignore[no-untyped-def]
    """Reference answer on a deterministic share of items, a wrong answer on the rest."""

    def answer(item: SuiteItem) -> str:
        bucket = sum(item.id.encode()) % 100
        return item.reference if bucket < share * 100 else wrong_answer(item)

    return answer


def _behaviours() -> dict[str, dict[str, Any]]:
    suites = load_suites()
    specs: dict[str, ProviderBehavior] = {
        "fast": ProviderBehavior(latency_ms=20, rules=item_rules(suites, _share_correct(1.0))),
        "steady": ProviderBehavior(
            latency_ms=60,
            ttft_ms=5,
            error="http_500",
            error_rate=0.05,
            seed=7,
            rules=item_rules(suites, _share_correct(0.7)),
        ),
        "slow": ProviderBehavior(
            latency_ms=150,
            tokens_per_second=400,
            error="http_429",
            error_rate=0.10,
            seed=11,
            rules=item_rules(suites, _share_correct(0.4)),
        ),
    }
    return {name: behaviour.to_dict() for name, behaviour in specs.items()}


PRICES = {"fast": (0.15, 0.6), "steady": (1.0, 3.0), "slow": (3.0, 15.0)}


def _child(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _scheduled_run(runs: Any, timeout: float = 60.0) -> str:
    """The id of the run the scheduler starts (polled: the run is made inside the service)."""
    deadline = time.monotonic() + timeout
    doc = None
    while doc is None and time.monotonic() < deadline:
        doc = await runs.find_one({"trigger": "schedule"})
        if doc is None:
            await asyncio.sleep(0.05)  # polling the service's database
    if doc is None:
        raise TimeoutError("the scheduler started no run")
    return str(doc["_id"])


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="mx-bench-benchmark-"))
    redis, mongo = start_redis(), start_mongo()
    llm_port, router_port, bench_port = free_port(), free_port(), free_port()
    config = work / "providers.json"
    config.write_text(json.dumps({"providers": _behaviours()}))
    procs: list[subprocess.Popen[bytes]] = []
    server: GrpcServer | None = None
    try:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "BENCHMARK_", "MASTERX_"))}
        procs.append(
            _child(
                [PYTHON, "-m", "masterx_runtime.testing.fake_llm", "--port", str(llm_port), "--config", str(config)],
                base_env,
                work / "llm.log",
            )
        )
        wait_for_port("127.0.0.1", llm_port, 30, procs[-1])
        entries = [
            {
                "name": name,
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{llm_port}/p/{name}/v1",
                "model": f"{name}-model",
                "input_price_per_mtok": PRICES[name][0],
                "output_price_per_mtok": PRICES[name][1],
                "max_output_tokens": 2048,
            }
            for name in ("fast", "steady", "slow")
        ]
        router_env = base_env | {
            "ROUTER_PROVIDERS_JSON": json.dumps({"providers": entries}),
            "ROUTER_LOCAL_PROVIDER": "off",
            "ROUTER_DISCOVER_ENV_KEYS": "0",
            "REDIS_URL": redis.url,
            "MONGO_URL": mongo.url,
            "MONGO_DB": "bench_router",
            "BENCHMARK_ADDR": f"127.0.0.1:{bench_port}",
            "MASTERX_GRPC_PORT": str(router_port),
            "MASTERX_METRICS_PORT": "-1",
            "MASTERX_LOG_LEVEL": "WARNING",
        }
        procs.append(_child([PYTHON, "-m", "services.router"], router_env, work / "router.log"))
        router_addr = f"127.0.0.1:{router_port}"
        await wait_until_serving(router_addr, "masterx.router.v1.RouterService", timeout=120)

        cfg = BenchmarkSettings(
            schedule_hours=24.0,
            schedule_check_seconds=0.2,
            schedule_max_items=args.max_items,
            schedule_max_cost_usd=0.0,
            calibration=False,
            provider_concurrency=args.concurrency,
            lease_seconds=30.0,
        )
        app = BenchmarkApp(
            cfg,
            mongo=MongoSettings(url=mongo.url, database="bench_benchmark"),
            peers=PeerSettings(router_addr=router_addr),
        )
        boot = time.perf_counter()
        server = GrpcServer(app, ServerSettings(grpc_port=bench_port, metrics_port=-1, shutdown_grace_seconds=2.0))
        await server.start()
        startup_s = time.perf_counter() - boot

        async with channel(f"127.0.0.1:{bench_port}") as chan:
            stub = benchmark_pb2_grpc.BenchmarkServiceStub(chan)
            assert app.mongo is not None and app.manager is not None
            runs = app.mongo.db["benchmark_runs"]
            run_id = await _scheduled_run(runs)
            wall = time.perf_counter()
            last = None
            async for msg in stub.WatchRun(benchmark_pb2.WatchRunRequest(run_id=run_id), timeout=300):
                last = msg
            wall_s = time.perf_counter() - wall
            assert last is not None
            status = last.status
            run_doc = await runs.find_one({"_id": run_id})
            items = await app.mongo.db[ITEMS].find({"run_id": run_id}).to_list(length=None)
            await asyncio.sleep(1.0)  # a few idle scheduler ticks
            sched = app.manager.scheduler_stats
            store_seconds = app.manager.store.write_seconds
            store_batches = app.manager.store.write_batches
            scores = await stub.GetScores(benchmark_pb2.GetScoresRequest())
    finally:
        if server is not None:
            await server.stop(2.0)
        for proc in reversed(procs):
            _stop(proc)
        mongo.stop()
        redis.stop()

    ok = [i for i in items if not i["error"]]
    latencies = [i["latency_ms"] for i in ok]
    ttfts = [i["ttft_ms"] for i in ok]
    sandbox_ms = [
        float(m.group(1)) for i in items for e in i["evidence"] if (m := re.match(r"sandbox \w+: (\d+) ms", e))
    ]
    run_s = run_doc["finished_at"] - run_doc["started_at"]  # type: ignore[index]
    launch_ms = sched.launch_seconds * 1000 / max(1, sched.launches)
    idle_ticks = max(1, sched.ticks - sched.launches)
    idle_ms = (sched.tick_seconds - sched.launch_seconds) * 1000 / idle_ticks
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print()
    print(
        f"benchmark service: full scheduled run, 6 suites x 3 providers  ({platform.machine()}, {os.cpu_count()} CPUs)"
    )
    print(
        f"  run {run_id}: {benchmark_pb2.RunState.Name(status.state)}  {status.completed_items}/{status.total_items} items  error={status.error!r}"
    )
    rows = [
        ("service startup (suites, sandbox probe, MongoDB)", f"{startup_s * 1000:8.0f} ms"),
        ("run wall time (started_at -> finished_at)", f"{run_s:8.2f} s   (target <= 60 s)"),
        ("watched wall time (client)", f"{wall_s:8.2f} s"),
        ("throughput", f"{len(items) / run_s:8.1f} items/s"),
        (
            "provider latency p50 / p95 / p99 (router)",
            f"{percentile(latencies, 50):6.0f} / {percentile(latencies, 95):.0f} / {percentile(latencies, 99):.0f} ms",
        ),
        (
            "time to first token p50 / p95 / p99",
            f"{percentile(ttfts, 50):6.0f} / {percentile(ttfts, 95):.0f} / {percentile(ttfts, 99):.0f} ms",
        ),
        ("items that failed at the provider", f"{len(items) - len(ok):8d} of {len(items)}"),
        (
            "sandbox runs, p50 / p95 / max",
            f"{len(sandbox_ms):4d}, {percentile(sandbox_ms, 50):.0f} / {percentile(sandbox_ms, 95):.0f} / {max(sandbox_ms, default=0):.0f} ms",
        ),
        (
            "MongoDB inserts (item batches + scores)",
            f"{store_seconds * 1000:8.0f} ms in {store_batches} batches ({store_seconds * 1000 / max(1, store_batches):.1f} ms each)",
        ),
        ("  run writer: inserts + progress updates", f"{run_doc['stats']['write_ms']:8.0f} ms"),  # type: ignore[index]
        ("scheduler: launching tick (leases, run record)", f"{launch_ms:8.1f} ms ({sched.launches} launch)"),
        (
            "scheduler: idle tick (reap + due check)",
            f"{idle_ms:8.1f} ms mean over {sched.ticks - sched.launches} ticks",
        ),
        ("peak RSS of this process (benchmark service)", f"{rss_mb:8.0f} MB"),
    ]
    for label, value in rows:
        print(f"  {label:<48} {value}")
    print("  leaderboards (final / quality / speed / cost):")
    for board in scores.leaderboards:
        cells = ", ".join(
            f"{s.provider} {s.final_score:.0f}/{s.quality:.0f}/{s.speed:.0f}/{s.cost:.0f}" for s in board.scores
        )
        print(f"    {common_pb2.Category.Name(board.category).removeprefix('CATEGORY_').lower():<9} {cells}")
    ok_run = status.state == benchmark_pb2.RUN_STATE_SUCCEEDED and run_s <= 60
    print("  RESULT:", "PASS" if ok_run else "FAIL")
    return 0 if ok_run else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=4, help="BENCHMARK_PROVIDER_CONCURRENCY")
    parser.add_argument("--max-items", type=int, default=0, help="items per suite (0 = all)")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
