"""MongoDB and Redis killed and restarted under load: nothing the clients were told succeeded is lost.

Target (issue 14): 0 lost ledger charges, emotion-history entries and benchmark item results across
a 15 s MongoDB outage under load; a benchmark run that ends during the outage is recorded when
MongoDB is back, with its true outcome; the benchmark (which needs MongoDB) reports NOT_SERVING
meanwhile while the router and emotion (which degrade) stay SERVING.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest

from masterx.benchmark.v1 import benchmark_pb2
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.launcher import LocalSystem
from masterx_runtime.testing.fake_llm import FakeLLMServer
from tests.faults.harness import (
    Load,
    account,
    health,
    kill,
    providers,
    report,
    restart_store,
    start_benchmark_run,
    system_env,
    wait_outboxes_empty,
    wait_run_end,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

OUTAGE_S = 15.0


async def test_mongodb_outage_under_load_loses_nothing(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    system = LocalSystem(
        state_dir=tmp_path / "state",
        fixed_ports=False,
        env=system_env(providers(fake_llm)),
        services=("emotion", "router", "benchmark"),
    )
    await asyncio.to_thread(system.start, 180.0)
    router, emotion, bench = (f"127.0.0.1:{system.ports[n]}" for n in ("router", "emotion", "benchmark"))
    load = Load(router_addr=router, emotion_addr=emotion)
    try:
        await load.start()
        await asyncio.sleep(3)
        run_id = await start_benchmark_run(bench, "bench", max_items=4)
        await asyncio.sleep(1.5)
        sent_before = load.chats.sent
        # SIGTERM: SecantusDB acknowledges writes up to ~1 s before they reach its disk, so a SIGKILL
        # loses its own last writes, which no client can recover (mongod with a journal does not).
        kill(system, "mongodb", signal.SIGTERM)
        killed = time.monotonic()
        await asyncio.sleep(5)
        during = {n: health(system, n).get("status") for n in ("router", "emotion", "benchmark")}
        costs_during = await _get_costs(router)
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed)))
        await asyncio.to_thread(restart_store, system, "mongodb")
        outage = time.monotonic() - killed
        await asyncio.sleep(5)
        await load.stop()
        run = await wait_run_end(bench, run_id, 90)
        boxes = await asyncio.to_thread(wait_outboxes_empty, system, ("router", "emotion", "benchmark"), 30)
        after = {n: health(system, n).get("status") for n in ("router", "emotion", "benchmark")}
        costs_after = await _get_costs(router)
        rows = account(system.base_env["MONGO_URL"], load, run_id=run_id, run_total=run.total_items if run else -1)
        outbox_of = {"ledger": ("router", "router-ledger"), "emotion": ("emotion", "emotion-history")}
        outbox_of["benchmark"] = ("benchmark", "benchmark-items")
        for row in rows:
            svc, box = outbox_of[row.store.split()[0]]
            row.dropped = int(boxes.get(svc, {}).get(box, {}).get("dropped", 0))
        report(
            f"MongoDB stopped (SIGTERM) for {outage:.1f}s under load",
            load,
            rows,
            {
                "requests sent during/after the outage": load.chats.sent - sent_before,
                "health during outage": during,
                "health after": after,
                "GetCosts during / after": (costs_during, costs_after),
                "benchmark run": f"{benchmark_pb2.RunState.Name(run.state)} items {run.completed_items}/{run.total_items} "
                f"error {run.error!r}"
                if run
                else "not found",
                "outboxes": boxes,
            },
        )
        assert load.chats.ok > 100 and load.analyses.ok > 20, "too little load to judge"
        assert [r for r in rows if r.lost or r.written > r.expected] == [], "silent loss (or double count)"
        assert all(b["dropped"] == 0 and b["pending"] == 0 for bs in boxes.values() for b in bs.values()), boxes
        assert during == {"router": "SERVING", "emotion": "SERVING", "benchmark": "NOT_SERVING"}
        assert after == {"router": "SERVING", "emotion": "SERVING", "benchmark": "SERVING"}
        assert run is not None and benchmark_pb2.RunState.Name(run.state) == "RUN_STATE_SUCCEEDED", run
        assert run.completed_items == run.total_items
        assert load.chats.failed == 0 and load.analyses.failed == 0
        assert costs_during == "UNAVAILABLE" and costs_after == "OK"  # never an incomplete answer
    finally:
        await load.stop()
        await asyncio.to_thread(system.stop)


async def test_redis_killed_and_restarted_under_load(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    """Chat degrades but keeps answering without Redis; nothing is lost; Redis comes back in use."""
    system = LocalSystem(
        state_dir=tmp_path / "state", fixed_ports=False, env=system_env(providers(fake_llm)), services=("router",)
    )
    await asyncio.to_thread(system.start, 120.0)
    load = Load(router_addr=f"127.0.0.1:{system.ports['router']}")
    try:
        await load.start()
        await asyncio.sleep(2)
        kill(system, "redis")
        await asyncio.sleep(5)
        during = health(system, "router").get("stores", {}).get("redis", {}).get("up")
        await asyncio.to_thread(restart_store, system, "redis")
        await asyncio.sleep(3)
        after = health(system, "router").get("stores", {}).get("redis", {}).get("up")
        await load.stop()
        await asyncio.to_thread(wait_outboxes_empty, system, ("router",), 20)
        rows = account(system.base_env["MONGO_URL"], load)[:1]
        report("Redis killed for 5s under load", load, rows, {"redis up during / after": (during, after)})
        assert [r for r in rows if r.lost] == []
        assert during is False and after is True
        assert load.chats.ok > 50
        assert load.chats.failed <= load.chats.sent * 0.05, load.chats.failures  # calls in flight at the kill
    finally:
        await load.stop()
        await asyncio.to_thread(system.stop)


async def _get_costs(router: str) -> str:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    async with channel(router) as chan:
        try:
            await router_pb2_grpc.RouterServiceStub(chan).GetCosts(
                router_pb2.GetCostsRequest(since_day=day, until_day=day), timeout=10
            )
        except grpc.aio.AioRpcError as err:
            return str(err.code().name)
    return "OK"
