"""The outbox: direct writes while the store answers, ordered replay after an outage, bound, restart."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, WriteError

from masterx_runtime.outbox import Outbox, is_transient
from masterx_runtime.settings import ReliabilitySettings


class Store:
    """A writer whose availability the test switches; records what it was given, in order."""

    def __init__(self) -> None:
        self.up = True
        self.docs: list[dict[str, Any]] = []
        self.calls = 0
        self.poison: set[int] = set()

    async def write(self, docs: list[dict[str, Any]]) -> None:
        self.calls += 1
        await asyncio.sleep(0)
        if not self.up:
            raise AutoReconnect("connection refused")
        if any(d["n"] in self.poison for d in docs):
            raise WriteError("document failed validation", code=121)
        self.docs.extend(docs)


def files(folder: Path, pattern: str) -> list[Path]:
    return list(folder.glob(pattern))


def cfg(tmp_path: Path, **kw: Any) -> ReliabilitySettings:
    values = {"data_dir": str(tmp_path), "outbox_retry_max_seconds": 0.02, **kw}
    return dataclasses.replace(ReliabilitySettings(), **values)


async def test_direct_while_up_then_queued_in_order_and_replayed(tmp_path: Path) -> None:
    store = Store()
    box = Outbox("t", store.write, key="db", cfg=cfg(tmp_path))
    assert await box.write([{"n": 0}])
    store.up = False
    assert not await box.write([{"n": 1}, {"n": 2}])
    calls = store.calls
    assert not await box.write([{"n": 3}])  # queued behind the backlog: no store call of its own
    assert store.calls - calls <= 1  # (at most the flusher's retry ran meanwhile)
    assert box.stats.pending == 3 and not box.stats.store_up
    assert not await box.drain(0.1)
    store.up = True
    assert await box.drain(2.0)
    assert [d["n"] for d in store.docs] == [0, 1, 2, 3]
    assert box.stats.queued == 3 and box.stats.replayed == 3 and box.stats.written_direct == 1
    assert box.stats.store_up and box.stats.dropped == 0
    await box.close()
    assert not files(tmp_path, "*")  # an empty outbox leaves no file behind


async def test_full_outbox_drops_and_counts(tmp_path: Path) -> None:
    store = Store()
    store.up = False
    box = Outbox("t", store.write, key="db", cfg=cfg(tmp_path, outbox_max_entries=3))
    await box.write([{"n": i} for i in range(5)])
    assert box.stats.pending == 3 and box.stats.dropped == 2
    store.up = True
    assert await box.drain(2.0)
    assert [d["n"] for d in store.docs] == [0, 1, 2]
    assert box.snapshot()["dropped"] == 2
    await box.close()


async def test_left_on_disk_is_replayed_by_the_next_process(tmp_path: Path) -> None:
    store = Store()
    store.up = False
    box = Outbox("t", store.write, key="db", cfg=cfg(tmp_path))
    await box.write([{"n": 1, "when": "x"}, {"n": 2}])
    await box.close(timeout=0.05)  # store still down: kept on disk
    assert files(tmp_path, "t-*.sqlite")
    store.up = True
    other_key = Outbox("t", store.write, key="another-db", cfg=cfg(tmp_path))
    assert other_key.stats.recovered == 0  # never replayed into a different store
    await other_key.close()
    again = Outbox("t", store.write, key="db", cfg=cfg(tmp_path))
    assert again.stats.recovered == 2
    assert await again.drain(2.0)
    assert [d["n"] for d in store.docs] == [1, 2] and store.docs[0]["when"] == "x"
    await again.close()


async def test_two_processes_never_share_a_file(tmp_path: Path) -> None:
    store = Store()
    a = Outbox("t", store.write, key="db", cfg=cfg(tmp_path))
    b = Outbox("t", store.write, key="db", cfg=cfg(tmp_path))
    assert a.path != b.path
    await a.close()
    await b.close()


async def test_rejected_document_does_not_block_the_queue(tmp_path: Path) -> None:
    store = Store()
    store.up = False
    box = Outbox("t", store.write, key="db", cfg=cfg(tmp_path))
    await box.write([{"n": 1}, {"n": 2}, {"n": 3}])
    store.poison = {2}
    store.up = True
    assert await box.drain(2.0)
    assert [d["n"] for d in store.docs] == [1, 3]
    assert box.stats.rejected == 1
    with pytest.raises(WriteError):  # a direct write the store rejects is the caller's to report
        await box.write([{"n": 2}])
    await box.close()


def test_transient_errors_are_outages_not_bad_writes() -> None:
    assert is_transient(AutoReconnect("x")) and is_transient(ConnectionRefusedError()) and is_transient(TimeoutError())
    assert not is_transient(WriteError("bad", code=121)) and not is_transient(ValueError())
