"""Student history through its outbox: a replayed entry is stored once; entries wait while MongoDB is down."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from masterx_runtime.outbox import Outbox
from masterx_runtime.settings import ReliabilitySettings
from masterx_runtime.testing import servers
from services.emotion.history import STUDENTS, Entry, HistoryStore, _payload


def entry(ts: float) -> Entry:
    return Entry(ts, "joy", (0.7, 0.5, 0.5), "engaged", "s1")


async def store(client: AsyncMongoClient[dict[str, Any]], db: str, tmp_path: Path) -> HistoryStore:
    """A history store whose outbox file lives in ``tmp_path``."""
    history = HistoryStore(client[db], limit=10, max_pending_writes=100)
    await history.outbox.close()  # the default one (temp folder)
    cfg = dataclasses.replace(ReliabilitySettings(), data_dir=str(tmp_path), outbox_retry_max_seconds=0.05)
    history.outbox = Outbox("history-test", history._store, key=db, cfg=cfg)
    return history


async def test_replayed_entry_is_stored_once(tmp_path: Path, mongo_url: str, mongo_db_name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    history = await store(client, mongo_db_name, tmp_path)
    try:
        payload = _payload("ana", entry(1.0))
        await history._store([payload])
        await history._store([payload, _payload("ana", entry(2.0))])  # the first is a replay
        doc = await client[mongo_db_name][STUDENTS].find_one({"_id": "ana"})
        assert doc is not None and doc["total"] == 2 and [h["ts"] for h in doc["history"]] == [1.0, 2.0]
    finally:
        await history.drain(1.0)
        await client.close()


async def test_entries_wait_while_mongodb_is_down(tmp_path: Path) -> None:
    port = servers.free_port()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=300, connectTimeoutMS=300
    )
    history = await store(client, "historydown", tmp_path)
    mongo = None
    try:
        for i in range(4):
            task, link = history.begin("bo", 5)
            task.cancel()
            history.commit("bo", entry(float(i)), link, None)
        await asyncio.sleep(1.0)  # the first append fails (no server), the rest queue behind it
        assert history.outbox.stats.pending == 4 and history.dropped_writes == 0
        mongo = await asyncio.to_thread(servers.start_mongo, port)
        assert await history.outbox.drain(10.0)
        doc = await client["historydown"][STUDENTS].find_one({"_id": "bo"})
        assert doc is not None and doc["total"] == 4 and [h["ts"] for h in doc["history"]] == [0.0, 1.0, 2.0, 3.0]
    finally:
        await history.drain(1.0)
        await client.close()
        if mongo is not None:
            mongo.stop()
