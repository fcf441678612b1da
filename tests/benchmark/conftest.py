"""Fixtures of the benchmark tests: a BenchmarkStore on a fresh database of the real MongoDB-wire server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from masterx_runtime.stores.mongo_store import MongoSettings, MongoStore
from services.benchmark.store import INDEXES, BenchmarkStore


@pytest.fixture
async def store(mongo_url: str, mongo_db_name: str) -> AsyncIterator[BenchmarkStore]:
    mongo = MongoStore(MongoSettings(url=mongo_url, database=mongo_db_name))
    await mongo.connect(indexes=INDEXES)
    try:
        yield BenchmarkStore(mongo.db)
    finally:
        await mongo.client.drop_database(mongo_db_name)
        await mongo.close()
