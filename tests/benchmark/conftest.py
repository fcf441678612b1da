"""Fixtures of the benchmark tests: a BenchmarkStore on a fresh database of the real MongoDB-wire server."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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


@pytest.fixture
def sandbox_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private parent for the sandbox work directories of this test.

    Leak checks then look only at sandbox processes started by this test, not at those of another
    test run on the same machine. World-traversable, because the sandboxed child runs as nobody.
    """
    root = Path(tempfile.mkdtemp(prefix="mx-sbx-test-"))
    root.chmod(0o711)
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)
