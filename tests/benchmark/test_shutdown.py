"""Stopping the service finishes even when the scheduler loses a cancel.

This is the CI hang of 2026-11-21: on Python 3.11 a cancel that lands inside a driver call
(``asyncio.wait_for`` in pymongo) can be swallowed; the scheduler loop then went on ticking and
``BenchmarkApp.stop()`` waited for it forever.
"""

from __future__ import annotations

import asyncio

import pytest

from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.servers import free_port
from services.benchmark.app import BenchmarkApp
from services.benchmark.config import BenchmarkSettings
from services.benchmark.runs import RunManager


async def test_stop_finishes_when_a_cancel_is_swallowed_mid_tick(
    mongo_url: str, mongo_db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_reap = RunManager.reap_stale
    swallowed: list[str] = []
    ticking = asyncio.Event()

    async def reap_that_loses_one_cancel(self: RunManager) -> list[str]:
        ticking.set()
        try:
            await asyncio.sleep(30)  # stands in for a slow MongoDB request
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append("cancel lost")  # what 3.11's wait_for can do
        return await real_reap(self)

    monkeypatch.setattr(RunManager, "reap_stale", reap_that_loses_one_cancel)
    app = BenchmarkApp(
        BenchmarkSettings(schedule_check_seconds=0.05, lease_seconds=1.0),
        mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
        peers=PeerSettings(router_addr=f"127.0.0.1:{free_port()}", rpc_timeout_seconds=2.0),
    )
    await app.start()
    try:
        async with asyncio.timeout(10):
            await ticking.wait()
    except BaseException:
        await app.stop()
        raise
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(20):  # before the fix this never returned
        await app.stop()
    assert swallowed == ["cancel lost"]
    assert loop.time() - started < 5.0
    assert app._scheduler_task is not None and app._scheduler_task.done()
