"""Leases, run records and score queries against the real MongoDB-wire server."""

from __future__ import annotations

import asyncio

from services.benchmark.store import BenchmarkStore


async def test_only_one_of_many_concurrent_claimants_gets_a_suite_lease(store: BenchmarkStore) -> None:
    wins = await asyncio.gather(
        *(store.acquire_lease("math", owner=f"replica-{i}", run_id=f"run-{i}", now=100.0, ttl=30.0) for i in range(20))
    )
    assert sum(wins) == 1
    winner = wins.index(True)
    holder = await store.lease_holder("math", now=101.0)
    assert holder is not None and holder["owner"] == f"replica-{winner}"
    # other suites are independent
    assert await store.acquire_lease("coding", owner="replica-x", run_id="run-x", now=100.0, ttl=30.0)


async def test_a_lease_is_free_again_after_expiry_or_release(store: BenchmarkStore) -> None:
    assert await store.acquire_lease("math", owner="a", run_id="r1", now=100.0, ttl=30.0)
    assert not await store.acquire_lease("math", owner="b", run_id="r2", now=129.0, ttl=30.0)
    assert await store.renew_lease("math", owner="a", run_id="r1", now=129.0, ttl=30.0)  # now expires at 159
    assert not await store.acquire_lease("math", owner="b", run_id="r2", now=150.0, ttl=30.0)
    assert await store.acquire_lease("math", owner="b", run_id="r2", now=160.0, ttl=30.0)
    assert not await store.renew_lease("math", owner="a", run_id="r1", now=161.0, ttl=30.0)  # a lost it
    await store.release_lease("math", owner="a", run_id="r1")  # not a's to release: no effect
    assert not await store.acquire_lease("math", owner="c", run_id="r3", now=161.0, ttl=30.0)
    await store.release_lease("math", owner="b", run_id="r2")
    assert await store.acquire_lease("math", owner="c", run_id="r3", now=161.0, ttl=30.0)


async def test_due_check_is_part_of_the_atomic_acquisition(store: BenchmarkStore) -> None:
    assert await store.acquire_lease("math", owner="a", run_id="r1", now=1000.0, ttl=10.0, due_before=0.0)
    await store.mark_started("math", owner="a", run_id="r1", now=1000.0)
    await store.release_lease("math", owner="a", run_id="r1")
    # free, but its last run started at 1000: not due for a schedule wanting runs older than 900
    assert not await store.acquire_lease("math", owner="b", run_id="r2", now=1100.0, ttl=10.0, due_before=900.0)
    assert await store.acquire_lease("math", owner="b", run_id="r2", now=4700.0, ttl=10.0, due_before=1100.0)
    # on-demand acquisition ignores the schedule
    await store.release_lease("math", owner="b", run_id="r2")
    assert await store.acquire_lease("math", owner="c", run_id="r3", now=4701.0, ttl=10.0)


def _run(run_id: str, state: str) -> dict[str, object]:
    return {"_id": run_id, "state": state, "categories": ["math"], "providers": ["p"], "heartbeat_at": 0.0}


def _score(run_id: str, provider: str, at: float, final: float) -> dict[str, object]:
    return {
        "run_id": run_id,
        "provider": provider,
        "category": "math",
        "final_score": final,
        "measured_at": at,
        "quality": final,
        "speed": 50.0,
        "cost": 50.0,
    }


async def test_leaderboard_reads_only_succeeded_runs_within_the_max_age(store: BenchmarkStore) -> None:
    for run_id, state in [("old", "SUCCEEDED"), ("new", "SUCCEEDED"), ("live", "RUNNING"), ("stop", "CANCELLED")]:
        await store.create_run(_run(run_id, state))
    await store.insert_scores(
        [
            _score("old", "alpha", 100.0, 90.0),
            _score("old", "beta", 100.0, 10.0),
            _score("new", "beta", 200.0, 70.0),
            _score("live", "alpha", 300.0, 1.0),
            _score("stop", "gamma", 300.0, 99.0),
        ]
    )
    board = await store.latest_scores("math", since=50.0)
    assert [(d["provider"], d["run_id"]) for d in board] == [("alpha", "old"), ("beta", "new")]
    recent = await store.latest_scores("math", since=150.0)
    assert [(d["provider"], d["run_id"]) for d in recent] == [("beta", "new")]
    assert await store.latest_scores("math", since=250.0) == []
    assert await store.latest_scores("coding", since=0.0) == []
    history = await store.provider_history("beta")
    assert [d["run_id"] for d in history] == ["new", "old"]
    assert [d["run_id"] for d in await store.provider_history("beta", limit=1)] == ["new"]
    assert await store.provider_history("gamma") == []


async def test_run_end_is_recorded_once_with_the_stored_item_count(store: BenchmarkStore) -> None:
    await store.create_run(_run("r", "RUNNING") | {"completed_items": 0})
    await store.insert_items(
        [{"run_id": "r", "provider": "p", "category": "math", "item_id": f"i{n}", "seq": n} for n in range(3)]
    )
    await store.raise_completed("r", 2)
    await store.raise_completed("r", 1)  # never moves backwards
    assert (await store.get_run("r"))["completed_items"] == 2  # type: ignore[index]
    assert await store.request_cancel("r") is not None
    assert await store.finish_run("r", "SUCCEEDED", finished_at=5.0, require_no_cancel=True) is None
    done = await store.finish_run("r", "CANCELLED", finished_at=5.0, error="cancelled by request")
    assert done is not None and done["state"] == "CANCELLED" and done["completed_items"] == 3
    assert await store.finish_run("r", "FAILED", finished_at=6.0) is None
    assert await store.request_cancel("r") is None
    assert [d["seq"] for d in await store.list_items("r", after_seq=0)] == [1, 2]


async def test_runs_without_heartbeat_are_found_as_stale(store: BenchmarkStore) -> None:
    await store.create_run(_run("alive", "RUNNING") | {"heartbeat_at": 100.0})
    await store.create_run(_run("dead", "RUNNING") | {"heartbeat_at": 10.0})
    await store.create_run(_run("over", "SUCCEEDED") | {"heartbeat_at": 10.0})
    assert [d["_id"] for d in await store.stale_runs(50.0)] == ["dead"]
