"""Reasoning service benchmarks: MCTS engine overhead, parallel expansion, problem generation, budgets.

Run: ``.venv/bin/python bench/bench_reasoning.py`` (about a minute on 2 cores).

* engine overhead per iteration, provider time excluded: a generator that answers at once
  (target <= 0.2 ms);
* 100 iterations, width 3, every provider call taking 50 ms: wall time against 100 x 50 ms
  (sequential generation would need 300 x 50 ms);
* practice problem generation latency (target p99 <= 5 ms) per term width;
* token budget allocation latency.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from masterx_runtime.errors import FailedPrecondition
from masterx_runtime.testing.benchstats import percentile
from services.reasoning.budget.allocator import BudgetAllocator, BudgetRequest
from services.reasoning.budget.estimator import load_labels
from services.reasoning.config import HERE
from services.reasoning.mcts.engine import ResultEvent, Search, SearchConfig, SearchResult
from services.reasoning.mcts.generator import CallUsage, GeneratedStep, StepRequest
from services.reasoning.mcts.rewards import RewardMode, RewardModel, RewardSettings
from services.reasoning.practice.generator import Bounds, ProblemSpec, generate, warm_tables
from services.reasoning.practice.mastery import DAY, PracticeConfig, SkillRecord
from services.reasoning.practice.planner import PART_TYPES, PURPOSES, bounds_for
from services.reasoning.practice.soroban import ALL_SKILLS


def row(name: str, unit: str, values: Sequence[float], extra: str = "") -> str:
    return f"| {name:<52} | {percentile(values, 50):>9.3f} | {percentile(values, 95):>9.3f} | {percentile(values, 99):>9.3f} | {unit:<4} | {extra}"


HEADER = f"| {'measurement':<52} | {'p50':>9} | {'p95':>9} | {'p99':>9} | unit | notes\n|{'-' * 54}|{'-' * 11}|{'-' * 11}|{'-' * 11}|------|------"


class InstantGenerator:
    """Answers at once: what remains of the wall time is the engine's own work."""

    def __init__(self, script: Callable[[StepRequest], str]) -> None:
        self.script = script
        self.calls = 0

    async def generate(self, request: StepRequest) -> GeneratedStep:
        self.calls += 1
        return GeneratedStep(self.script(request), CallUsage(40, 12, 0.0, "bench", "m"))


class SlowGenerator(InstantGenerator):
    def __init__(self, script: Callable[[StepRequest], str], latency: float) -> None:
        super().__init__(script)
        self.latency = latency

    async def generate(self, request: StepRequest) -> GeneratedStep:
        await asyncio.sleep(self.latency)
        return await super().generate(request)


def open_ended(r: StepRequest) -> str:
    return f"{r.strategy.label} step {r.step_number}: 3 * 4 = 12 and the next idea follows."


def equation(r: StepRequest) -> str:
    """Final answers (right for odd strategies, wrong for even) from step 3 on, for a third of the branches."""
    if r.step_number >= 3 and (r.step_number + r.strategy.value) % 3 == 0:
        return "Divide by 2: 8 / 2 = 4.\nFinal answer: 4" if r.strategy.value % 2 else "Final answer: 5"
    return f"{r.strategy.label} {r.step_number}: 11 - 3 = 8, so 2x = 8."


async def search(query: str, gen: InstantGenerator, cfg: SearchConfig, mode: RewardMode, seed: int = 0) -> SearchResult:
    async for event in Search(query, gen, RewardModel(mode, RewardSettings()), cfg, seed=seed).run():
        if isinstance(event, ResultEvent):
            return event.result
    raise RuntimeError("no result")


async def bench_overhead() -> list[str]:
    lines = []
    for name, query, script, mode, cfg in (
        (
            "engine overhead / iteration (expansions)",
            "Tell me about rivers",
            open_ended,
            RewardMode.HEURISTIC,
            SearchConfig(max_iterations=100, max_depth=32, max_width=3, early_stop=False),
        ),
        (
            "engine overhead / iteration (verifier, mixed)",
            "Solve 2x + 3 = 11",
            equation,
            RewardMode.AUTO,
            SearchConfig(max_iterations=100, max_depth=10, max_width=3, early_stop=False),
        ),
    ):
        per_iter, cpu_per_iter = [], []
        for seed in range(5):  # warm-up
            await search(query, InstantGenerator(script), cfg, mode, seed)
        gc.collect()
        for seed in range(200):
            gen = InstantGenerator(script)
            started, cpu = time.perf_counter(), time.process_time()
            res = await search(query, gen, cfg, mode, seed)
            per_iter.append((time.perf_counter() - started) * 1000 / res.iterations)
            cpu_per_iter.append((time.process_time() - cpu) * 1000 / res.iterations)
        note = f"{res.iterations} it, {len(res.nodes) - 1} nodes, stop {res.stop_reason}"
        lines.append(row(name + ", wall", "ms", per_iter, f"target <= 0.2 ms; {note}"))
        lines.append(row(name + ", CPU", "ms", cpu_per_iter, "process CPU time (immune to a busy machine)"))
    tracemalloc.start()
    res = await search(
        "Tell me about rivers",
        InstantGenerator(open_ended),
        SearchConfig(max_iterations=1000, max_depth=32, early_stop=False),
        RewardMode.HEURISTIC,
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    lines.append(
        f"| {'memory: 1000-iteration search (tracemalloc peak)':<52} | {peak / 1e6:>9.2f} | {'':>9} | {'':>9} | MB   | {len(res.nodes) - 1} nodes"
    )
    return lines


async def bench_parallel() -> list[str]:
    lines = []
    baseline = 100 * 0.050
    for parallelism in (3, 6, 12):
        walls = []
        for seed in range(3):
            gen = SlowGenerator(open_ended, 0.050)
            started = time.perf_counter()
            await search(
                "Tell me about rivers",
                gen,
                SearchConfig(max_iterations=100, max_depth=32, max_width=3, early_stop=False, parallelism=parallelism),
                RewardMode.HEURISTIC,
                seed,
            )  # type: ignore[arg-type]
            walls.append(time.perf_counter() - started)
        wall = statistics.median(walls)
        lines.append(
            f"| {f'100 it x width 3, 50 ms calls, parallelism {parallelism}':<52} | {wall:>9.2f} | {'':>9} | {'':>9} | s    | "
            f"{gen.calls} calls; ratio to 100 x 50 ms = {wall / baseline:.2f}; to sequential 300 x 50 ms = {wall / (3 * baseline):.2f}"
        )
    return lines


def bench_generation() -> list[str]:
    cfg = PracticeConfig.from_mapping(yaml.safe_load((HERE / "practice.yaml").read_text()))
    started = time.perf_counter()
    warm_tables(cfg.extra_rods)
    warm = time.perf_counter() - started
    now = time.time()
    learner = cfg.calculator([], now)
    expert = cfg.calculator([SkillRecord(s, "mastered", now - DAY, now - 60 * DAY) for s in ALL_SKILLS], now)
    fluent = cfg.calculator([SkillRecord(s, "mastered", now - DAY, now - 5 * DAY) for s in ALL_SKILLS[:20]], now)
    lines = [
        f"| {'move tables + catalogues (once, at start-up)':<52} | {warm * 1000:>9.0f} | {'':>9} | {'':>9} | ms   |"
    ]
    for digits in (1, 2, 3):
        times, cpu_times, failed = [], [], 0
        seed = 0
        for _ in range(3):
            for purpose in PURPOSES:
                for part in PART_TYPES:
                    for calc in (learner, fluent, expert):
                        for terms in (3, 5, 8):
                            seed += 1
                            spec = ProblemSpec(
                                terms=terms,
                                digits=digits,
                                bounds=bounds_for(cfg, purpose, part),
                                allow_subtraction=seed % 4 != 0,
                                seed=seed,
                                purpose=purpose,
                                part_type=part,
                            )
                            t0, c0 = time.perf_counter(), time.process_time()
                            try:
                                generate(spec, calc, cfg)
                            except FailedPrecondition:
                                failed += 1  # e.g. 8 direct-move additions cannot fit on one rod
                            times.append((time.perf_counter() - t0) * 1000)
                            cpu_times.append((time.process_time() - c0) * 1000)
        target = "target p99 <= 5 ms" if digits <= 2 else "no move table for 3 digits"
        label = f"GenerateProblem, {digits}-digit terms"
        lines.append(row(label + ", wall", "ms", times, f"{len(times)} problems ({failed} impossible); {target}"))
        lines.append(row(label + ", CPU", "ms", cpu_times, "process CPU time"))
    t0 = time.perf_counter()
    with contextlib.suppress(Exception):
        generate(ProblemSpec(bounds=Bounds(100, None)), learner, cfg)
    lines.append(
        f"| {'impossible bounds -> FAILED_PRECONDITION':<52} | {(time.perf_counter() - t0) * 1000:>9.3f} | {'':>9} | {'':>9} | ms   |"
    )
    return lines


def bench_budget() -> list[str]:
    allocator = BudgetAllocator.from_files()
    texts, _ = load_labels()
    for t in texts[:20]:
        allocator.allocate(BudgetRequest(t))
    times = []
    for _ in range(3):
        for t in texts:
            t0 = time.perf_counter()
            allocator.allocate(BudgetRequest(t, learning_state="frustrated", cognitive_load=0.7, readiness="low"))
            times.append((time.perf_counter() - t0) * 1000)
    answers = [allocator.allocate(BudgetRequest(t)).answer_tokens for t in texts]
    return [
        row("AllocateBudget (estimator + factors)", "ms", times, f"{len(times)} calls"),
        f"| {'answer budget over the labelled queries':<52} | {statistics.median(answers):>9.0f} | {percentile(answers, 95):>9.0f} | {max(answers):>9.0f} | tok  | vs provider default 4096 max_tokens",
    ]


async def bench_through_router() -> list[str]:
    """The same 100-iteration search, but every step goes reasoning -> router -> fake provider over
    HTTP (50 ms latency), all three in this process on the same cores."""
    import dataclasses
    import json

    from masterx.reasoning.v1 import reasoning_pb2 as pb
    from masterx.reasoning.v1 import reasoning_pb2_grpc
    from masterx_runtime.config import load
    from masterx_runtime.settings import PeerSettings
    from masterx_runtime.stores.mongo_store import MongoSettings
    from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior
    from masterx_runtime.testing.grpc_server import serving
    from masterx_runtime.testing.servers import offline_router_env, start_mongo, start_redis
    from services.reasoning.app import ReasoningApp
    from services.reasoning.config import ReasoningSettings
    from services.router.app import RouterApp

    redis, mongo = start_redis(), start_mongo()
    lines = []
    try:
        async with FakeLLMServer() as fake:
            fake.configure(
                "slow", ProviderBehavior(latency_ms=50, default_reply="Rivers carry water downhill and shape valleys.")
            )
            env = {
                **offline_router_env(redis.url, mongo.url, "bench_reasoning"),
                "ROUTER_PROVIDERS_JSON": json.dumps([fake.provider_entry("slow")]),
            }
            async with serving(RouterApp(env)) as (router_server, _):
                app = ReasoningApp(
                    dataclasses.replace(load(ReasoningSettings, {}), judge_enabled=False),
                    mongo=dataclasses.replace(load(MongoSettings, {}), url=mongo.url, database="bench_reasoning"),
                    peers=dataclasses.replace(load(PeerSettings, {}), router_addr=f"127.0.0.1:{router_server.port}"),
                )
                async with serving(app) as (_, chan):
                    stub = reasoning_pb2_grpc.ReasoningServiceStub(chan)
                    for parallelism in (3, 12):
                        request = pb.ReasonRequest(
                            query="Tell me about rivers.",
                            reward_model=pb.REWARD_MODEL_HEURISTIC,
                            limits=pb.SearchLimits(
                                max_iterations=100,
                                max_depth=32,
                                max_width=3,
                                parallelism=parallelism,
                                disable_early_stop=True,
                            ),
                        )
                        started = time.perf_counter()
                        events = [e async for e in stub.Reason(request, timeout=120)]
                        wall = time.perf_counter() - started
                        res = events[-1].result
                        lines.append(
                            f"| {f'same through the router over HTTP, parallelism {parallelism}':<52} | {wall:>9.2f} | {'':>9} | {'':>9} | s    | "
                            f"{res.search.generations} calls, {res.search.iterations} it; ratio to 100 x 50 ms = {wall / 5.0:.2f}"
                        )
    finally:
        redis.stop()
        mongo.stop()
    return lines


async def main() -> None:
    print("MasterX reasoning benchmarks (python", sys.version.split()[0] + ")")
    print()
    print(HEADER)
    for line in await bench_overhead():
        print(line, flush=True)
    for line in await bench_parallel():
        print(line, flush=True)
    for line in bench_generation():  # first: it times the one-off move-table build
        print(line, flush=True)
    for line in await bench_through_router():
        print(line, flush=True)
    for line in bench_budget():
        print(line, flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nmax RSS {rss:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
