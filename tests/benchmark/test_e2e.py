"""End to end: test LLM server -> REAL router -> REAL benchmark service -> MongoDB (and back to the router)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections import defaultdict
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc
from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2
from masterx_runtime.clients import channel
from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.fake_llm import ReplyRule
from masterx_runtime.testing.servers import free_port
from services.benchmark.app import BenchmarkApp
from services.benchmark.config import BenchmarkSettings
from services.benchmark.store import RUNS
from tests.benchmark.harness import (
    FakeProvider,
    Stack,
    _start,
    behavior,
    benchmark_stack,
    correct_rules,
    prompt_pattern,
    sandbox_processes,
    suites,
    wrong_rules,
)

MATH, CODING, EMPATHY, LANGUAGE = (
    common_pb2.CATEGORY_MATH,
    common_pb2.CATEGORY_CODING,
    common_pb2.CATEGORY_EMPATHY,
    common_pb2.CATEGORY_LANGUAGE,
)
SUITES = suites()

#: No runs the tests did not ask for (the schedule and calibration are on by default).
QUIET = {"schedule_hours": 0.0, "calibration": False}
FAST = BenchmarkSettings(
    lease_seconds=2.0,
    item_timeout_seconds=15.0,
    sandbox_timeout_seconds=3.0,
    sandbox_test_timeout_seconds=1.0,
    **QUIET,  # type: ignore[arg-type]
)


def _judge_rules(names: list[str]) -> list[ReplyRule]:
    verdict = {n: False for n in names}
    return [
        ReplyRule(match=r"Tutor reply:\s*<<<[^>]*should have", reply=json.dumps({"criteria": verdict}), scope="prompt")
    ]


def _judge_default(names: list[str]) -> str:
    return json.dumps({"criteria": dict.fromkeys(names, True), "reason": "supportive"})


async def _health(stack: Stack) -> int:
    async with channel(stack.bench_addr) as chan:
        resp = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return int(resp.status)


async def test_run_stores_consistent_results_and_ranks_correct_provider_first(
    redis_url: str, mongo_url: str, mongo_db_name: str
) -> None:
    empathy = next(s for s in SUITES.values() if s.name == "empathy")
    criteria = [c.name for c in empathy.items[0].spec.criteria]  # type: ignore[union-attr]
    providers = [
        FakeProvider("good", behavior(correct_rules(SUITES), latency_ms=5)),
        FakeProvider("bad", behavior(wrong_rules(SUITES), latency_ms=5)),
        FakeProvider("judge", behavior(_judge_rules(criteria), default_reply=_judge_default(criteria))),
        FakeProvider("down", behavior([], error="http_500", error_rate=1.0)),
    ]
    cfg = BenchmarkSettings(judge_provider="judge", item_timeout_seconds=15.0, **QUIET)  # type: ignore[arg-type]
    async with benchmark_stack(
        providers, redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=cfg
    ) as stack:
        request = benchmark_pb2.StartRunRequest(
            categories=[MATH, CODING, EMPATHY, LANGUAGE],
            providers=["good", "bad", "down"],
            trigger="test",
            max_items_per_suite=3,
        )
        progress = await stack.run_to_end(request)

        first, last, items = progress[0], progress[-1], [m for m in progress if m.HasField("item")]
        assert not first.HasField("item") and not last.HasField("item")
        assert last.status.state == benchmark_pb2.RUN_STATE_SUCCEEDED, last.status.error
        assert last.status.total_items == last.status.completed_items == 36 == len(items)
        done = [m.status.completed_items for m in items]
        assert done == sorted(done) and done[-1] == 36

        run_id = last.status.run_id
        stored = (await stack.stub.ListItemResults(benchmark_pb2.ListItemResultsRequest(run_id=run_id))).items
        assert len(stored) == (await stack.stub.GetRun(benchmark_pb2.GetRunRequest(run_id=run_id))).completed_items
        by_key = {(r.provider, r.item_id): r for r in stored}
        for r in stored:
            assert r.evidence and r.suite_version and r.latency_ms > 0
            assert r.quality == (100.0 if r.provider == "good" else 0.0), (r.provider, r.item_id, list(r.evidence))
            if r.provider == "down":  # provider failures are recorded results, not lost items
                assert r.error and r.tokens.total_tokens == 0 and r.evidence[0].startswith("provider error")
            else:
                assert not r.error and r.tokens.total_tokens > 0 and r.cost_usd > 0
        math_item = next(r for (p, _), r in by_key.items() if p == "good" and r.category == MATH)
        assert math_item.scorer == "numeric" and any("parsed" in e for e in math_item.evidence)
        code_item = next(r for (p, _), r in by_key.items() if p == "bad" and r.category == CODING)
        assert code_item.scorer == "unit_tests" and any("tests passed 0/" in e for e in code_item.evidence)
        assert {r.scorer for r in stored if r.category == EMPATHY and not r.error} == {"judge"}
        only_bad_math = await stack.stub.ListItemResults(
            benchmark_pb2.ListItemResultsRequest(run_id=run_id, provider="bad", category=MATH)
        )
        assert len(only_bad_math.items) == 3

        scores = await stack.stub.GetScores(benchmark_pb2.GetScoresRequest())
        assert {b.category for b in scores.leaderboards} == {MATH, CODING, EMPATHY, LANGUAGE}
        for board in scores.leaderboards:
            assert [s.provider for s in board.scores] == ["good", "bad", "down"]
            good, bad, down = board.scores
            assert good.quality == 100.0 and bad.quality == 0.0 and good.final_score > bad.final_score
            assert (down.final_score, down.errors, down.items) == (0.0, 3, 3)
            assert good.run_id == run_id and good.items == 3 and good.model == "good-model"
        history = await stack.stub.GetProviderHistory(benchmark_pb2.GetProviderHistoryRequest(provider="good"))
        assert len(history.scores) == 4
        assert stack.llm.stats("judge")["requests"] == 6  # one judge call per empathy answer, through the router


async def test_hostile_code_answers_are_contained_and_scored_zero(
    redis_url: str, mongo_url: str, mongo_db_name: str, sandbox_root: Path
) -> None:
    coding = next(s for s in SUITES.values() if s.name == "coding")
    targets = [i for i in coding.items if i.spec.kind == "unit_tests"][:6]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        bodies = [
            "while True:\n        pass",
            "import os\n    while True:\n        os.fork()",
            "data = bytearray(16 * 1024 ** 3)\n    return data",
            f"import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n    return 1",
            # forges verdict lines on every descriptor it can reach (the old nonce trick's channel)
            "import json, os\n    fake = ''.join(json.dumps({'kind': 'test', 'index': i, 'ok': True}) + '\\n' for i in range(9))\n"
            '    for fd in range(64):\n        try:\n            os.write(fd, (fake + \'{"kind": "done"}\\n\').encode())\n'
            "        except OSError:\n            pass\n    return None",
            # reads the service's stores and environment
            "import os\n    return open('/proc/%d/environ' % os.getppid()).read() + str(os.listdir('/'))",
        ]
        hostile = []
        for item, body in zip(targets, bodies, strict=True):
            name = item.spec.entry_point  # type: ignore[union-attr]
            hostile.append(
                ReplyRule(match=prompt_pattern(item), reply=f"```python\ndef {name}(*args):\n    {body}\n```")
            )
        providers = [
            FakeProvider("good", behavior(correct_rules(SUITES), latency_ms=2)),
            FakeProvider("hostile", behavior(hostile, latency_ms=2)),
        ]
        async with benchmark_stack(
            providers, redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=FAST
        ) as stack:
            started = await stack.stub.StartRun(
                benchmark_pb2.StartRunRequest(
                    categories=[CODING], providers=["good", "hostile"], max_items_per_suite=30
                )
            )
            # the service keeps answering while hostile code runs
            probes = []
            while True:
                t0 = time.perf_counter()
                status = await stack.stub.GetRun(benchmark_pb2.GetRunRequest(run_id=started.run_id), timeout=5)
                probes.append(time.perf_counter() - t0)
                if status.state not in (benchmark_pb2.RUN_STATE_PENDING, benchmark_pb2.RUN_STATE_RUNNING):
                    break
                await asyncio.sleep(0.1)
            assert status.state == benchmark_pb2.RUN_STATE_SUCCEEDED, status.error
            assert max(probes) < 1.0
            assert await _health(stack) == health_pb2.HealthCheckResponse.SERVING
            results = (
                await stack.stub.ListItemResults(benchmark_pb2.ListItemResultsRequest(run_id=started.run_id))
            ).items
            with pytest.raises(BlockingIOError):
                listener.accept()  # the network call never arrived
    by_item = {(r.provider, r.item_id): r for r in results}
    for item in targets:
        bad, good = by_item[("hostile", item.id)], by_item[("good", item.id)]
        assert bad.quality == 0.0, (item.id, list(bad.evidence))
        assert good.quality == 100.0, (item.id, list(good.evidence))
    assert sandbox_processes(sandbox_root) == []


async def test_cancel_leaves_consistent_records_and_leases_block_duplicates(
    redis_url: str, mongo_url: str, mongo_db_name: str
) -> None:
    """A run on replica A is refused a duplicate, watched and cancelled through replica B."""
    providers = [FakeProvider("slow", behavior(correct_rules(SUITES), latency_ms=150))]
    cfg = BenchmarkSettings(provider_concurrency=1, lease_seconds=2.0, **QUIET)  # type: ignore[arg-type]
    async with benchmark_stack(
        providers, redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=cfg
    ) as stack:
        replica_b = BenchmarkApp(
            cfg,
            mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
            peers=PeerSettings(router_addr=stack.router_addr),
        )
        port_b = free_port()
        server_b = await _start(replica_b, port_b)
        chan_b = channel(f"127.0.0.1:{port_b}")
        try:
            stub, remote = stack.stub, benchmark_pb2_grpc.BenchmarkServiceStub(chan_b)
            run = await stub.StartRun(
                benchmark_pb2.StartRunRequest(categories=[MATH], providers=["slow"], max_items_per_suite=20)
            )
            assert run.total_items == 20 and run.state == benchmark_pb2.RUN_STATE_PENDING

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await remote.StartRun(benchmark_pb2.StartRunRequest(categories=[MATH, CODING], providers=["slow"]))
            assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS and run.run_id in (info.value.details() or "")
            other = await stub.StartRun(
                benchmark_pb2.StartRunRequest(categories=[CODING], providers=["slow"], max_items_per_suite=1)
            )

            seen = 0
            async for msg in remote.WatchRun(benchmark_pb2.WatchRunRequest(run_id=run.run_id), timeout=30):
                seen += msg.HasField("item")
                if seen == 3:
                    break
            cancelled = await remote.CancelRun(benchmark_pb2.CancelRunRequest(run_id=run.run_id), timeout=10)
        finally:
            await chan_b.close()
            await server_b.stop(1.0)
        assert cancelled.state == benchmark_pb2.RUN_STATE_CANCELLED and cancelled.finished_at > 0
        assert "cancelled by request" in cancelled.error
        stored = (await stub.ListItemResults(benchmark_pb2.ListItemResultsRequest(run_id=run.run_id))).items
        assert 3 <= len(stored) < 20 and cancelled.completed_items == len(stored)
        await asyncio.sleep(0.5)  # nothing arrives after the end
        assert len((await stub.ListItemResults(benchmark_pb2.ListItemResultsRequest(run_id=run.run_id))).items) == len(
            stored
        )
        board = await stub.GetLeaderboard(benchmark_pb2.GetLeaderboardRequest(category=MATH))
        assert list(board.scores) == []  # no aggregates from a cancelled run
        assert (
            list(
                (
                    await stub.GetProviderHistory(
                        benchmark_pb2.GetProviderHistoryRequest(provider="slow", category=MATH)
                    )
                ).scores
            )
            == []
        )
        raw = stack.bench.mongo.db["benchmark_scores"]  # type: ignore[union-attr]
        assert await raw.count_documents({"run_id": run.run_id}) == 0

        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.CancelRun(benchmark_pb2.CancelRunRequest(run_id=run.run_id))
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # the lease was released with the cancel: math can run again at once
        rerun = await stub.StartRun(
            benchmark_pb2.StartRunRequest(categories=[MATH], providers=["slow"], max_items_per_suite=1)
        )
        final = [m async for m in stub.WatchRun(benchmark_pb2.WatchRunRequest(run_id=rerun.run_id), timeout=30)][-1]
        assert final.status.state == benchmark_pb2.RUN_STATE_SUCCEEDED
        finished_other = [
            m async for m in stub.WatchRun(benchmark_pb2.WatchRunRequest(run_id=other.run_id), timeout=30)
        ][-1]
        assert finished_other.status.state == benchmark_pb2.RUN_STATE_SUCCEEDED


async def test_two_schedulers_never_run_the_same_suite_at_once(
    redis_url: str, mongo_url: str, mongo_db_name: str
) -> None:
    every = 1.0
    cfg = BenchmarkSettings(
        schedule_hours=every / 3600,
        schedule_check_seconds=0.05,
        schedule_max_items=1,
        schedule_providers=("p",),
        schedule_max_cost_usd=0.0,
        lease_seconds=1.0,
        calibration=False,
    )
    providers = [FakeProvider("p", behavior(correct_rules(SUITES), latency_ms=120))]
    async with benchmark_stack(
        providers, redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=cfg
    ) as stack:
        second = BenchmarkApp(
            cfg,
            mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
            peers=PeerSettings(router_addr=stack.router_addr),
        )
        server = await _start(second, free_port())
        try:
            await asyncio.sleep(3.6)
        finally:
            await server.stop(1.0)
        await stack.bench.manager.shutdown()  # type: ignore[union-attr]
        runs = await stack.bench.mongo.db[RUNS].find({}).to_list(length=None)  # type: ignore[union-attr]
    assert {r["owner"] for r in runs} <= {stack.bench.owner, second.owner}
    assert all(r["trigger"] == "schedule" for r in runs)
    per_suite: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        if run["state"] == "SUCCEEDED":
            for name in run["categories"]:
                per_suite[name].append((run["started_at"], run["finished_at"]))
    assert set(per_suite) == {s.name for s in SUITES.values()}
    for name, spans in per_suite.items():
        spans.sort()
        assert len(spans) >= 2, name
        for (start_a, end_a), (start_b, _) in itertools.pairwise(spans):
            assert end_a <= start_b, f"{name}: runs overlap"
            assert start_b - start_a >= every - 0.01, f"{name}: started again before it was due"


class _Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_leaderboards_respect_max_age(redis_url: str, mongo_url: str, mongo_db_name: str) -> None:
    clock = _Clock()
    providers = [FakeProvider("good", behavior(correct_rules(SUITES), latency_ms=2))]
    async with benchmark_stack(
        providers, redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=FAST, clock=clock
    ) as stack:
        clock.offset = -7200.0  # this run is measured two hours ago
        old = await stack.run_to_end(
            benchmark_pb2.StartRunRequest(categories=[MATH], providers=["good"], max_items_per_suite=2)
        )
        assert old[-1].status.state == benchmark_pb2.RUN_STATE_SUCCEEDED
        clock.offset = 0.0

        async def board(max_age: int) -> list[str]:
            resp = await stack.stub.GetLeaderboard(
                benchmark_pb2.GetLeaderboardRequest(category=MATH, max_age_seconds=max_age)
            )
            return [s.run_id for s in resp.scores]

        assert await board(3600) == []
        assert await board(3 * 3600) == [old[-1].status.run_id]
        assert await board(0) == [old[-1].status.run_id]  # default max age: 7 days
        assert (
            list((await stack.stub.GetScores(benchmark_pb2.GetScoresRequest(max_age_seconds=3600))).leaderboards) == []
        )

        new = await stack.run_to_end(
            benchmark_pb2.StartRunRequest(categories=[MATH], providers=["good"], max_items_per_suite=2)
        )
        assert await board(3600) == [new[-1].status.run_id]  # newest wins
        history = await stack.stub.GetProviderHistory(benchmark_pb2.GetProviderHistoryRequest(provider="good"))
        assert [s.run_id for s in history.scores] == [new[-1].status.run_id, old[-1].status.run_id]


async def _routed(stack: Stack, category: int) -> router_pb2.RoutingDecision:
    request = router_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content="What is 12 times 12?")],
        category=category,  # type: ignore[arg-type]
    )
    return await stack.router.Route(request, timeout=5)


async def test_router_picks_the_provider_the_latest_run_ranks_best(
    redis_url: str, mongo_url: str, mongo_db_name: str
) -> None:
    right, wrong = correct_rules(SUITES), wrong_rules(SUITES)
    providers = [
        FakeProvider("alpha", behavior(right, latency_ms=5)),
        FakeProvider("beta", behavior(wrong, latency_ms=5)),
    ]
    async with benchmark_stack(
        providers, redis_url=redis_url, mongo_url=mongo_url, mongo_db_name=mongo_db_name, cfg=FAST
    ) as stack:
        for best, rules_alpha, rules_beta in (("alpha", right, wrong), ("beta", wrong, right)):
            stack.llm.configure("alpha", behavior(rules_alpha, latency_ms=5))
            stack.llm.configure("beta", behavior(rules_beta, latency_ms=5))
            progress = await stack.run_to_end(
                benchmark_pb2.StartRunRequest(categories=[MATH], providers=["alpha", "beta"], max_items_per_suite=4)
            )
            run_id = progress[-1].status.run_id
            board = await stack.stub.GetLeaderboard(benchmark_pb2.GetLeaderboardRequest(category=MATH))
            assert board.scores[0].provider == best and board.scores[0].run_id == run_id
            deadline = time.monotonic() + 10
            while True:
                decision = await _routed(stack, MATH)
                sources = {c.provider: c.score_source for c in decision.candidates}
                if decision.provider == best and sources.get(best) == f"benchmark:{run_id}":
                    break
                assert time.monotonic() < deadline, f"router still picks {decision.provider} ({sources})"
                await asyncio.sleep(0.2)
