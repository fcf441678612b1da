"""Routing evaluation: per-item outcomes replayed through the router's dry-run Route RPC.

    .venv/bin/python bench/bench_routing_policy.py [--outcomes FILE.csv] [--write-outcomes FILE.csv]
        [--knobs 0,0.1,...,1] [--json FILE]

1. Outcomes. Without ``--outcomes`` they are recorded: the shared fake LLM server plays two
   providers whose correctness depends on the suite item's difficulty label --

   * ``strong``: $3 / $15 per million input / output tokens, 30 ms; right on every easy and
     medium item and on 90 % of the hard ones;
   * ``weak``: $0.15 / $0.60, 10 ms; right on 90 % of easy, 50 % of medium, 10 % of hard items

   (which items within a difficulty are right is a fixed hash of the item id) -- and the REAL
   benchmark service runs every suite item against both through the REAL router (MongoDB-wire
   server, Redis). The outcomes are the run's stored item results (``ListItemResults``): quality
   / 100, cost and latency per (item, provider), with the suite item's prompt, category and
   difficulty. ``--outcomes`` replays a CSV in the format of
   :mod:`services.benchmark.routing_eval` instead (recorded anywhere): the outcomes are then
   imported as one benchmark run, so the router ranks with scores computed from them.

2. Replay. For every prompt and every knob value the router's dry-run ``Route`` (no provider
   call) is asked which provider it would use: category hint from the outcomes, the knob as
   ``cost_quality``, and the complexity from one of three sources: ``router`` (the router's own
   estimate from the text: what a request without ``budget.complexity`` gets), ``reasoning``
   (``budget.complexity`` from the reasoning service's fitted estimator, the value
   AllocateBudget returns and the gateway sends with every chat turn) or ``label``
   (``budget.complexity`` from the item's difficulty label: easy 0.2, medium 0.5, hard 0.8,
   standing in for a perfect difficulty signal).

3. Policies compared on the same outcomes: MasterX (per knob, both complexity sources),
   always-strongest, always-cheapest, uniform random, random strong/cheap mixes, and the
   oracle. Printed: quality, quality retained vs always-strongest, cost, cost saved, PGR, share
   routed to the strongest per difficulty, APGR, and the cheapest knob that keeps >= 95 % of
   the strongest provider's quality. Note the recorded run is also the evidence the router
   ranks with (in-sample): the evaluation measures the routing policy, not generalisation.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masterx.benchmark.v1 import benchmark_pb2  # noqa: E402
from masterx.common.v1 import common_pb2  # noqa: E402
from masterx.router.v1 import router_pb2  # noqa: E402
from masterx_runtime.testing.benchstats import machine, percentile  # noqa: E402
from masterx_runtime.testing.servers import start_mongo, start_redis  # noqa: E402
from services.benchmark import routing_eval as ev  # noqa: E402
from services.benchmark.aggregate import aggregate  # noqa: E402
from services.benchmark.config import BenchmarkSettings  # noqa: E402
from services.benchmark.suite import CATEGORY_BY_NAME, Suite, SuiteItem, load_suites  # noqa: E402
from services.reasoning.budget.estimator import ComplexityEstimator  # noqa: E402
from tests.benchmark.harness import FakeProvider, Stack, behavior, benchmark_stack, item_rules, wrong_answer  # noqa: E402

#: Share of items a provider gets right, per difficulty label.
ACCURACY = {"strong": {"easy": 1.0, "medium": 1.0, "hard": 0.9}, "weak": {"easy": 0.9, "medium": 0.5, "hard": 0.1}}
PRICES = {"strong": (3.0, 15.0), "weak": (0.15, 0.6)}
LATENCY_MS = {"strong": 30.0, "weak": 10.0}
LABEL_COMPLEXITY = {"easy": 0.2, "medium": 0.5, "hard": 0.8}
DEFAULT_KNOBS = tuple(round(0.1 * i, 1) for i in range(11))


def _right(provider: str, item: SuiteItem) -> bool:
    bucket = int(hashlib.sha256(f"{provider}:{item.id}".encode()).hexdigest()[:8], 16) % 1000
    return bucket < ACCURACY[provider][item.difficulty] * 1000


def _providers(suites: dict[int, Suite]) -> list[FakeProvider]:
    out = []
    for name in ("strong", "weak"):

        def answer(item: SuiteItem, provider: str = name) -> str:
            return item.reference if _right(provider, item) else wrong_answer(item)

        rules = item_rules(suites, answer)
        out.append(FakeProvider(name, behavior(rules, latency_ms=LATENCY_MS[name]), *PRICES[name]))
    return out


def _csv_providers(t: ev.Table) -> list[FakeProvider]:
    """Stand-ins for the providers of a CSV (never called: the dry run only ranks them)."""
    out = []
    for name in t.providers:
        mean = sum(t.cells[(k, name)].cost for k in t.keys) / len(t.keys)
        price = mean / 1000 * 1e6  # about what 1,000 tokens would cost
        out.append(FakeProvider(name, behavior([]), price, price))
    return out


async def _record(stack: Stack, suites: dict[int, Suite]) -> tuple[list[ev.Outcome], str, float]:
    started = time.perf_counter()
    progress = await stack.run_to_end(
        benchmark_pb2.StartRunRequest(providers=["strong", "weak"], trigger="bench", max_items_per_suite=0),
        timeout=600,
    )
    status = progress[-1].status
    if status.state != benchmark_pb2.RUN_STATE_SUCCEEDED:
        raise RuntimeError(f"recording run ended {status.state}: {status.error}")
    items = (await stack.stub.ListItemResults(benchmark_pb2.ListItemResultsRequest(run_id=status.run_id))).items
    outcomes = []
    for r in items:
        suite = suites[r.category]
        item = suite.item(r.item_id)
        outcomes.append(
            ev.Outcome(
                prompt=item.prompt,
                provider=r.provider,
                correct=r.quality / 100.0,
                cost=r.cost_usd,
                latency_ms=r.latency_ms,
                category=suite.name,
                difficulty=r.difficulty or item.difficulty,
                item_id=f"{suite.name}/{r.item_id}",
            )
        )
    return outcomes, status.run_id, time.perf_counter() - started


async def _import(stack: Stack, t: ev.Table, suites: dict[int, Suite]) -> str:
    """Store CSV outcomes as one SUCCEEDED benchmark run, so the router ranks with scores computed from them."""
    manager = stack.bench.manager
    assert manager is not None
    store, now, run_id = manager.store, time.time(), uuid.uuid4().hex
    docs: list[dict[str, Any]] = []
    for seq, o in enumerate(t.cells.values()):
        docs.append(
            {
                "run_id": run_id,
                "seq": seq,
                "provider": o.provider,
                "category": o.category or "general",
                "item_id": o.key,
                "difficulty": o.difficulty,
                "quality": o.correct * 100.0,
                "latency_ms": o.latency_ms,
                "ttft_ms": o.latency_ms,
                "tokens": {},
                "cost_usd": o.cost,
                "model": "",
                "scorer": "imported",
                "evidence": [],
                "error": "",
                "suite_version": "imported",
                "created_at": now,
            }
        )
    names = sorted({str(d["category"]) for d in docs})
    await store.create_run(
        {
            "_id": run_id,
            "state": "RUNNING",
            "categories": names,
            "providers": list(t.providers),
            "trigger": "import",
            "total_items": len(docs),
            "completed_items": 0,
            "started_at": now,
            "finished_at": 0.0,
            "error": "",
            "owner": "bench",
            "heartbeat_at": now,
            "cancel_requested": False,
        }
    )
    await store.insert_items(docs)
    weights = {s.name: s.weights for s in suites.values()}
    await store.insert_scores(aggregate(docs, weights, manager.refs, run_id=run_id, measured_at=now, trigger="import"))
    await store.finish_run(run_id, "SUCCEEDED", finished_at=now)
    return run_id


_ESTIMATOR: ComplexityEstimator | None = None


def _reasoning_complexity(prompt: str) -> float:
    global _ESTIMATOR
    if _ESTIMATOR is None:
        _ESTIMATOR = ComplexityEstimator.load()
    return float(_ESTIMATOR.predict(prompt))


def _request(o: ev.Outcome, knob: float, complexity_from: str) -> router_pb2.GenerateRequest:
    request = router_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content=o.prompt)],
        category=CATEGORY_BY_NAME.get(o.category, common_pb2.CATEGORY_UNSPECIFIED),  # type: ignore[arg-type]
        cost_quality=knob,
        purpose=router_pb2.PURPOSE_CHAT,
        user_id="bench-routing",
    )
    if complexity_from == "label" and o.difficulty:
        request.budget.complexity = LABEL_COMPLEXITY[o.difficulty]
    elif complexity_from == "reasoning":
        request.budget.complexity = _reasoning_complexity(o.prompt)
    return request


async def _wait_for_benchmark_scores(stack: Stack, t: ev.Table, run_id: str, timeout: float = 30.0) -> None:
    """Until the router's candidates carry this run's scores for every category and provider."""
    deadline = time.monotonic() + timeout
    categories = {t.first(k).category for k in t.keys if t.first(k).category}
    while True:
        pending = []
        for name in sorted(categories):
            probe = ev.Outcome("What is 2 + 2?", "", 0, 0, 0, category=name)
            decision = await stack.router.Route(_request(probe, 0.5, "router"), timeout=5)
            sources = {c.provider: c.score_source for c in decision.candidates}
            if any(sources.get(p) != f"benchmark:{run_id}" for p in t.providers):
                pending.append(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the router has no scores of run {run_id} for {pending}")
        await asyncio.sleep(0.2)


async def _replay(
    stack: Stack, t: ev.Table, knobs: Sequence[float], complexity_from: str
) -> tuple[dict[float, ev.PolicyResult], list[float], dict[str, list[float]]]:
    results: dict[float, ev.PolicyResult] = {}
    route_ms: list[float] = []
    complexity: dict[str, list[float]] = {}
    for knob in knobs:
        choice: dict[str, dict[str, float]] = {}
        for key in t.keys:
            o = t.first(key)
            started = time.perf_counter()
            decision = await stack.router.Route(_request(o, knob, complexity_from), timeout=5)
            route_ms.append((time.perf_counter() - started) * 1000)
            choice[key] = {decision.provider: 1.0}
            if knob == knobs[0]:
                value = getattr(decision, "complexity", None)
                if isinstance(value, float):
                    complexity.setdefault(o.difficulty or "unlabelled", []).append(value)
        results[knob] = ev.evaluate(t, choice, f"masterx[{complexity_from}]", knob)
    return results, route_ms, complexity


def _row(label: str, r: ev.PolicyResult, rel: ev.Relative, strong: str) -> str:
    by_diff = " ".join(f"{d[0]}={v:.0%}" for d, v in r.strong_share_by_difficulty.items())
    return (
        f"  {label:<24} {r.quality:7.3f} {rel.retained:8.1%} {r.cost:10.5f} {rel.cost_saved:8.1%} "
        f"{rel.pgr:6.2f}  {r.picks.get(strong, 0.0):6.1%}  {by_diff}"
    )


def _report(
    t: ev.Table,
    curves: dict[str, dict[float, ev.PolicyResult]],
    route_ms: list[float],
    complexity: dict[str, dict[str, list[float]]],
) -> dict[str, Any]:
    strong_name, weak_name = ev.strongest(t), ev.cheapest(t)
    strong = ev.evaluate(t, ev.single(t, strong_name), "always-strongest")
    weak = ev.evaluate(t, ev.single(t, weak_name), "always-cheapest")
    baselines = [
        ("always-strongest", strong),
        ("always-cheapest", weak),
        ("random (uniform)", ev.evaluate(t, ev.uniform_random(t), "random")),
        ("oracle", ev.evaluate(t, ev.oracle(t), "oracle")),
    ]
    header = f"  {'policy':<24} {'quality':>7} {'retained':>8} {'cost $':>10} {'saved':>8} {'PGR':>6}  {'strong':>6}  strong share by difficulty"
    print(f"\nstrongest = {strong_name}, cheapest = {weak_name}; {len(t.keys)} prompts x {len(t.providers)} providers")
    print(header)
    out: dict[str, Any] = {"strongest": strong_name, "cheapest": weak_name, "prompts": len(t.keys), "policies": {}}
    for label, r in baselines:
        rel = ev.relative(r, strong, weak)
        print(_row(label, r, rel, strong_name))
        out["policies"][label] = {"quality": r.quality, "cost": r.cost, **rel.__dict__}
    mix = {p: ev.relative(ev.evaluate(t, ev.random_mix(t, p), "mix"), strong, weak) for p in (0.25, 0.5, 0.75)}
    print(f"  random strong/cheap mixes: APGR {ev.apgr(mix.values()):.3f} (0.5 by construction)")
    for name, curve in curves.items():
        print(f"\n  {name}: curve over the cost-quality knob (cost_quality)")
        print(header.replace("policy  ", "knob    "))
        points = []
        for knob, r in curve.items():
            rel = ev.relative(r, strong, weak)
            points.append((knob, rel))
            print(_row(f"knob {knob:.1f}", r, rel, strong_name))
        area = ev.apgr(rel for _, rel in points)
        best = ev.best_saving(points, 0.95)
        print(f"  APGR {area:.3f}", end="")
        if best is not None:
            print(
                f"; >= 95% quality retained at knob {best[0]:.1f}: {best[1].retained:.1%} retained, "
                f"{best[1].cost_saved:.1%} cost saved"
            )
        else:
            print("; no knob keeps 95% of the strongest provider's quality")
        stats = complexity.get(name, {})
        if stats:
            print(
                "  complexity the router used, mean by difficulty: "
                + ", ".join(f"{d} {sum(v) / len(v):.2f}" for d, v in sorted(stats.items()))
            )
        out["policies"][name] = {
            "apgr": area,
            "curve": [
                {"knob": k, "quality": curve[k].quality, "cost": curve[k].cost, **rel.__dict__} for k, rel in points
            ],
            "best_95": None if best is None else {"knob": best[0], **best[1].__dict__},
        }
    print(
        f"\n  Route (dry run) latency over {len(route_ms)} calls: p50 {percentile(route_ms, 50):.2f} ms, "
        f"p99 {percentile(route_ms, 99):.2f} ms"
    )
    return out


async def main(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    suites = load_suites()
    knobs = [float(k) for k in args.knobs.split(",")]
    given = ev.table(ev.read_outcomes(Path(args.outcomes))) if args.outcomes else None
    providers = _csv_providers(given) if given else _providers(suites)
    cfg = BenchmarkSettings(schedule_hours=0.0, calibration=False, lease_seconds=30.0, provider_concurrency=4)
    redis, mongo = start_redis(), start_mongo()
    try:
        async with benchmark_stack(
            providers,
            redis_url=redis.url,
            mongo_url=mongo.url,
            mongo_db_name=f"bench_routing_{uuid.uuid4().hex[:6]}",
            cfg=cfg,
            router_env={"MASTERX_LOG_LEVEL": "WARNING", "ROUTER_SCORES_REFRESH_SECONDS": "0.2"},
        ) as stack:
            if given is None:
                outcomes, run_id, seconds = await _record(stack, suites)
                t = ev.table(outcomes)
                print(f"recorded {len(outcomes)} outcomes (run {run_id}) in {seconds:.1f} s")
                if args.write_outcomes:
                    ev.write_outcomes(Path(args.write_outcomes), outcomes)
                    print(f"wrote {args.write_outcomes}")
            else:
                t = given
                run_id = await _import(stack, t, suites)
                print(f"imported {len(t.cells)} outcomes from {args.outcomes} as run {run_id}")
            await _wait_for_benchmark_scores(stack, t, run_id)
            curves: dict[str, dict[float, ev.PolicyResult]] = {}
            route_ms: list[float] = []
            complexity: dict[str, dict[str, list[float]]] = {}
            for source in ("router", "reasoning", "label"):
                if source == "label" and not any(t.first(k).difficulty for k in t.keys):
                    continue
                curve, ms, seen = await _replay(stack, t, knobs, source)
                curves[f"masterx[{source}]"] = curve
                complexity[f"masterx[{source}]"] = seen
                route_ms += ms
        report = _report(t, curves, route_ms, complexity)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))  # noqa: ASYNC240 - once, at the end
    finally:
        mongo.stop()
        redis.stop()
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outcomes", help="replay this outcomes CSV instead of recording one")
    parser.add_argument("--write-outcomes", help="write the recorded outcomes to this CSV")
    parser.add_argument("--knobs", default=",".join(f"{k:g}" for k in DEFAULT_KNOBS), help="cost_quality values")
    parser.add_argument("--json", help="also write the report as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
