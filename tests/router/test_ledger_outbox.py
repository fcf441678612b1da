"""The cost ledger through its outbox: charges survive MongoDB being down, replays count once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from masterx_runtime.outbox import Outbox
from masterx_runtime.settings import ReliabilitySettings
from masterx_runtime.testing import servers
from services.router.ledger import DAILY, LEDGER, Charge, CostLedger


def charge(i: int) -> Charge:
    return Charge("u1", "alpha", "m", 10, 5 + i, False, 0.001, "chat", "s", 12.0, f"r{i}")


def outbox_cfg(tmp_path: Path) -> ReliabilitySettings:
    return dataclasses.replace(ReliabilitySettings(), data_dir=str(tmp_path), outbox_retry_max_seconds=0.05)


async def _daily_requests(client: AsyncMongoClient[dict[str, Any]], db: str) -> int:
    return sum([int(r["requests"]) async for r in client[db][DAILY].find({})])


async def test_replayed_batch_counts_once(tmp_path: Path, mongo_url: str, redis_url: str, mongo_db_name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    redis = aioredis.from_url(redis_url)
    ledger = CostLedger(client[mongo_db_name], redis, key_prefix=f"{mongo_db_name}:", flush_seconds=60)
    await ledger.outbox.close()  # the default one (temp folder): this test keeps its files in tmp_path
    ledger.outbox = Outbox("ledger-test", ledger._store, key=mongo_db_name, cfg=outbox_cfg(tmp_path))
    try:
        for i in range(3):
            ledger.submit(charge(i))
        assert ledger.queued == 3  # in memory until the flush (reported on the router's /health)
        await ledger.flush()
        assert ledger.queued == 0
        assert await client[mongo_db_name][LEDGER].count_documents({}) == 3
        # The reply of a stored batch was lost, so the outbox replays it: nothing is counted twice.
        docs = [d async for d in client[mongo_db_name][LEDGER].find({})]
        rows = [r async for r in client[mongo_db_name][DAILY].find({})]
        assert len(rows) == 1 and len(rows[0]["batches"]) == 1
        await ledger._store([{"_id": rows[0]["batches"][0], "charges": docs}])
        assert await client[mongo_db_name][LEDGER].count_documents({}) == 3
        assert await _daily_requests(client, mongo_db_name) == 3
    finally:
        await ledger.close()
        await redis.aclose()
        await client.close()


async def test_charges_wait_while_mongodb_is_down_and_land_when_it_is_back(tmp_path: Path, redis_url: str) -> None:
    port = servers.free_port()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=300, connectTimeoutMS=300
    )
    redis = aioredis.from_url(redis_url)
    ledger = CostLedger(client["ledgerdown"], redis, key_prefix="ledgerdown:")
    await ledger.outbox.close()
    ledger.outbox = Outbox("ledger-test", ledger._store, key=f"{port}", cfg=outbox_cfg(tmp_path))
    mongo = None
    try:
        for i in range(5):
            ledger.submit(charge(i))
        await ledger.flush()  # MongoDB is not there: no error, the batch waits on disk
        ledger.submit(charge(5))
        await ledger.flush()  # queued behind the first without trying MongoDB again
        assert ledger.outbox.stats.pending == 2 and not ledger.outbox.stats.store_up
        mongo = await asyncio.to_thread(servers.start_mongo, port)
        assert await ledger.outbox.drain(10.0)
        assert await client["ledgerdown"][LEDGER].count_documents({}) == 6
        assert await _daily_requests(client, "ledgerdown") == 6
        assert ledger.outbox.stats.dropped == 0 and ledger.outbox.stats.replayed == 2
    finally:
        await ledger.close()
        await redis.aclose()
        await client.close()
        if mongo is not None:
            mongo.stop()
