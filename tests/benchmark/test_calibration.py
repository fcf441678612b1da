"""Benchmarks nobody has to start: calibration of unscored providers, cost caps, leaderboard weights.

Real stack: fake providers -> real router -> real benchmark service -> real MongoDB-wire server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import grpc
import pytest
import yaml

from masterx.benchmark.v1 import benchmark_pb2
from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2
from services.benchmark.config import BenchmarkSettings
from services.benchmark.store import RUNS
from services.benchmark.suite import SuiteItem
from tests.benchmark.harness import (
    FakeProvider,
    Stack,
    behavior,
    benchmark_stack,
    correct_rules,
    item_rules,
    suites,
    wrong_answer,
    wrong_rules,
)

SUITES = suites()
ROOT = Path(__file__).resolve().parents[2]

#: Calibration on, every 0.2 s; no periodic schedule (tested on its own elsewhere).
CALIBRATING = BenchmarkSettings(
    schedule_hours=0.0,
    calibration=True,
    calibration_items=2,
    calibration_max_cost_usd=1.0,
    schedule_check_seconds=0.2,
    lease_seconds=2.0,
    item_timeout_seconds=15.0,
    sandbox_timeout_seconds=3.0,
    sandbox_test_timeout_seconds=1.0,
)


def _providers() -> list[FakeProvider]:
    """A strong, expensive provider that answers every item right and a weak, cheap one that never does."""
    return [
        FakeProvider("strong", behavior(correct_rules(SUITES), latency_ms=3), 3.0, 15.0),
        FakeProvider("weak", behavior(wrong_rules(SUITES), latency_ms=1), 0.15, 0.6),
    ]


async def _wait_for_scores(stack: Stack, providers: set[str], timeout: float = 90.0) -> benchmark_pb2.GetScoresResponse:
    deadline = time.monotonic() + timeout
    while True:
        scores = await stack.stub.GetScores(benchmark_pb2.GetScoresRequest(), timeout=5)
        have = {b.category: {s.provider for s in b.scores} for b in scores.leaderboards}
        if len(have) == len(SUITES) and all(providers <= v for v in have.values()):
            return scores
        assert time.monotonic() < deadline, f"no scores for every category and {providers} yet: {have}"
        await asyncio.sleep(0.2)


async def _runs(stack: Stack) -> list[dict[str, object]]:
    return await stack.bench.mongo.db[RUNS].find({}).sort("started_at", 1).to_list(length=None)  # type: ignore[union-attr]


def _assert_board_uses_suite_weights(board: benchmark_pb2.Leaderboard) -> None:
    suite = SUITES[board.category]
    weights = (board.quality_weight, board.speed_weight, board.cost_weight)
    assert weights == (suite.weights.quality, suite.weights.speed, suite.weights.cost)
    assert board.suite_version == suite.version
    for s in board.scores:
        assert s.final_score == pytest.approx(
            board.quality_weight * s.quality + board.speed_weight * s.speed + board.cost_weight * s.cost, abs=1e-3
        )
    finals = [s.final_score for s in board.scores]
    assert finals == sorted(finals, reverse=True)


async def test_a_fresh_system_gets_scores_without_anyone_starting_a_run(
    redis_url: str, mongo_url: str, mongo_db_name: str
) -> None:
    async with benchmark_stack(
        _providers(), redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=CALIBRATING
    ) as stack:
        scores = await _wait_for_scores(stack, {"strong", "weak"})
        for board in scores.leaderboards:
            _assert_board_uses_suite_weights(board)
            assert [s.provider for s in board.scores] == ["strong", "weak"]
            for s in board.scores:
                assert (s.trigger, s.score_mode, s.items) == ("calibration", "reference", 2)
        # every suite's weights are listed, for categories with and without scores alike
        assert [(s.category, s.quality_weight) for s in scores.suites] == [
            (c, SUITES[c].weights.quality) for c in sorted(SUITES)
        ]
        runs = await _runs(stack)
        assert [(r["trigger"], r["state"]) for r in runs] == [("calibration", "SUCCEEDED")]
        status = await stack.stub.GetRun(benchmark_pb2.GetRunRequest(run_id=str(runs[0]["_id"])))
        assert status.completed_items == status.total_items == 2 * 2 * len(SUITES)
        assert status.max_cost_usd == 1.0 and 0 < status.cost_usd < 1.0 and status.skipped_items == 0

        # scored providers are not calibrated again
        await asyncio.sleep(1.0)
        assert len(await _runs(stack)) == 1


async def test_calibration_covers_only_the_provider_without_scores(
    redis_url: str, mongo_url: str, mongo_db_name: str
) -> None:
    quiet = dataclasses.replace(CALIBRATING, calibration=False)
    async with benchmark_stack(
        _providers(), redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=quiet
    ) as stack:
        first = await stack.run_to_end(
            benchmark_pb2.StartRunRequest(providers=["strong"], trigger="test", max_items_per_suite=1)
        )
        assert first[-1].status.state == benchmark_pb2.RUN_STATE_SUCCEEDED
        assert stack.bench.scheduler is not None
        stack.bench.scheduler.cfg = dataclasses.replace(quiet, calibration=True)  # "weak" stands for a new provider
        scores = await _wait_for_scores(stack, {"strong", "weak"})
        runs = await _runs(stack)
        assert [(r["trigger"], r["providers"]) for r in runs] == [("test", ["strong"]), ("calibration", ["weak"])]
        for board in scores.leaderboards:
            by_provider = {s.provider: s for s in board.scores}
            assert by_provider["strong"].trigger == "test" and by_provider["weak"].trigger == "calibration"
            assert board.scores[0].provider == "strong"  # scores of different runs compare (absolute scales)
        # a calibration for one new provider does not push the schedule back for everyone
        leases = await stack.bench.mongo.db["benchmark_leases"].find({}).to_list(length=None)  # type: ignore[union-attr]
        started = {doc["_id"]: doc.get("last_started_at") for doc in leases}
        assert set(started.values()) == {runs[0]["started_at"]}


async def test_a_failing_provider_is_not_recalibrated_on_every_pass(
    redis_url: str, mongo_url: str, mongo_db_name: str
) -> None:
    providers = [FakeProvider("down", behavior([], error="http_500", error_rate=1.0))]
    async with benchmark_stack(
        providers, redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=CALIBRATING
    ) as stack:
        deadline = time.monotonic() + 60
        while not (runs := await _runs(stack)) or runs[0]["state"] not in ("FAILED", "SUCCEEDED"):
            assert time.monotonic() < deadline, runs
            await asyncio.sleep(0.2)
        assert runs[0]["trigger"] == "calibration" and runs[0]["state"] == "FAILED"
        await asyncio.sleep(1.5)  # several scheduler passes
        assert len(await _runs(stack)) == 1  # retried after BENCHMARK_CALIBRATION_RETRY_SECONDS, not now


async def test_cost_cap_skips_the_rest_and_scores_what_was_done(
    redis_url: str, mongo_url: str, mongo_db_name: str
) -> None:
    quiet = dataclasses.replace(CALIBRATING, calibration=False, provider_concurrency=1)
    async with benchmark_stack(
        _providers(), redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=quiet
    ) as stack:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.stub.StartRun(benchmark_pb2.StartRunRequest(providers=["strong"], max_cost_usd=-1.0))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_cost_usd" in (info.value.details() or "")

        cap = 1e-9  # below one answer: the first item of each provider runs, the rest is skipped
        progress = await stack.run_to_end(
            benchmark_pb2.StartRunRequest(
                categories=[common_pb2.CATEGORY_MATH, common_pb2.CATEGORY_GENERAL],
                providers=["strong", "weak"],
                max_items_per_suite=3,
                max_cost_usd=cap,
            )
        )
        status = progress[-1].status
        assert status.state == benchmark_pb2.RUN_STATE_SUCCEEDED, status.error
        assert status.total_items == 12 and status.completed_items == 2 and status.skipped_items == 10
        assert status.max_cost_usd == cap and status.cost_usd > cap
        items = (await stack.stub.ListItemResults(benchmark_pb2.ListItemResultsRequest(run_id=status.run_id))).items
        assert {(i.provider, i.category) for i in items} == {
            ("strong", common_pb2.CATEGORY_MATH),
            ("weak", common_pb2.CATEGORY_MATH),
        }
        assert all(i.difficulty in ("easy", "medium", "hard") for i in items)
        board = await stack.stub.GetLeaderboard(benchmark_pb2.GetLeaderboardRequest(category=common_pb2.CATEGORY_MATH))
        assert [s.items for s in board.scores] == [1, 1]
        _assert_board_uses_suite_weights(board)


async def test_router_and_leaderboard_agree_on_the_winner_of_every_category(
    redis_url: str, mongo_url: str, mongo_db_name: str
) -> None:
    """Winners differ by category (and by the categories' weights); the router names the leaderboard's top."""
    from services.router.policy import load_policy  # the router's module: its pivot leaves the knob as given

    split = {"math", "coding", "research"}

    category_of = {item.id: suite.name for suite in SUITES.values() for item in suite.items}

    def alpha(item: SuiteItem) -> str:
        return item.reference if category_of[item.id] in split else wrong_answer(item)

    def beta(item: SuiteItem) -> str:
        return wrong_answer(item) if category_of[item.id] in split else item.reference

    providers = [
        FakeProvider("alpha", behavior(item_rules(SUITES, alpha), latency_ms=2), 1.0, 4.0),
        FakeProvider("beta", behavior(item_rules(SUITES, beta), latency_ms=2), 0.5, 2.0),
        FakeProvider("gamma", behavior(wrong_rules(SUITES), latency_ms=1), 0.1, 0.4),
    ]
    pivot = load_policy().complexity_pivot
    async with benchmark_stack(
        providers, redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=CALIBRATING
    ) as stack:
        scores = await _wait_for_scores(stack, {"alpha", "beta", "gamma"})
        winners = {board.category: board.scores[0] for board in scores.leaderboards}
        assert {SUITES[c].name for c, w in winners.items() if w.provider == "alpha"} == split
        for category, top in winners.items():
            run_id = top.run_id
            request = router_pb2.GenerateRequest(
                messages=[common_pb2.ChatMessage(role="user", content="Can you help me with this?")],
                category=category,  # type: ignore[arg-type]
                cost_quality=0.5,
                budget=common_pb2.TokenBudget(complexity=pivot),
            )
            deadline = time.monotonic() + 15
            while True:
                decision = await stack.router.Route(request, timeout=5)
                sources = {c.provider: c.score_source for c in decision.candidates}
                if all(src == f"benchmark:{run_id}" for src in sources.values()):
                    break
                assert time.monotonic() < deadline, f"router has not loaded run {run_id}: {sources}"
                await asyncio.sleep(0.2)
            assert decision.provider == top.provider, (SUITES[category].name, list(decision.reasons))
            assert [c.provider for c in decision.candidates] == [
                s.provider for s in next(b for b in scores.leaderboards if b.category == category).scores
            ]


def test_schedule_and_calibration_are_on_by_default_with_caps() -> None:
    cfg = BenchmarkSettings()
    assert cfg.schedule_hours == 24.0 and cfg.schedule_max_items == 8 and cfg.schedule_max_cost_usd == 1.0
    assert cfg.calibration and cfg.calibration_items == 3 and cfg.calibration_max_cost_usd == 0.25
    assert cfg.score_mode == "reference"
    env = (ROOT / "deploy/k8s/base/config/benchmark.env").read_text()
    values = dict(line.split("=", 1) for line in env.splitlines() if line and not line.startswith("#"))
    assert float(values["BENCHMARK_SCHEDULE_HOURS"]) > 0
    assert (
        float(values["BENCHMARK_SCHEDULE_MAX_COST_USD"]) > 0 and float(values["BENCHMARK_CALIBRATION_MAX_COST_USD"]) > 0
    )
    assert values["BENCHMARK_CALIBRATION"] == "1" and values["BENCHMARK_SCORE_MODE"] == "reference"
    for overlay in ("dev", "prod"):
        kustomization = yaml.safe_load((ROOT / f"deploy/k8s/overlays/{overlay}/kustomization.yaml").read_text())
        for gen in kustomization.get("configMapGenerator", []):
            for literal in gen.get("literals", []):
                assert not literal.startswith(("BENCHMARK_SCHEDULE_HOURS=0", "BENCHMARK_CALIBRATION=0")), overlay
