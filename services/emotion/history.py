"""Per-student emotion history in MongoDB, kept off Analyze's critical path.

One document per student in ``emotion_students``: ``_id`` = user id, ``history`` (bounded with
``$push``/``$slice``, oldest first), ``total`` messages ever seen, ``updated_at``. The PAD
moving average is recomputed from the stored window (older messages weigh less than 0.1 % at
the configured alpha and lookback, so nothing else needs storing and concurrent writers cannot
lose an update).

Analyze reads the student's recent window while the model runs, computes the trajectory with
the new message appended, answers, and appends the entry in the background. Messages of one
student are chained: while a message is in flight (or its write is pending) the next message of
the same student gets its window handed over in memory, so a fast chat stream sees its own
history in order without waiting for MongoDB; otherwise the window is read from MongoDB. If MongoDB is slow or down, Analyze answers
without trajectory and a warning is logged (at most every ``warn_every_s`` seconds per kind: read
and write problems have separate slots, so one never hides the other).

Appends go through an :class:`~masterx_runtime.outbox.Outbox`: while MongoDB is down (or more than
``max_pending_writes`` appends are in flight) entries wait on local disk and are replayed in order
when it is back, so an outage loses none; only a full outbox drops entries, and those are counted
(``dropped_writes``, ``masterx_outbox_dropped_total{outbox="emotion-history"}``) and logged. Each
entry carries an ``id`` and is pushed only if the student's history does not hold it yet, so a
replay never duplicates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from masterx_runtime.errors import NotFound, Unavailable
from masterx_runtime.outbox import Outbox
from masterx_runtime.stores.mongo_store import target
from services.emotion.trajectory import PadTriple

log = logging.getLogger("masterx.emotion.history")

STUDENTS = "emotion_students"


@dataclass(frozen=True)
class Entry:
    """One analysed message as stored (no message text: only what the trend needs)."""

    timestamp: float
    primary_emotion: str
    pad: PadTriple
    learning_state: str
    session_id: str

    def to_doc(self) -> dict[str, Any]:
        return {
            "ts": self.timestamp,
            "emotion": self.primary_emotion,
            "pad": list(self.pad),
            "state": self.learning_state,
            "session": self.session_id,
        }

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Entry:
        p = d.get("pad") or [0.5, 0.5, 0.5]
        return cls(
            float(d.get("ts", 0.0)),
            str(d.get("emotion", "")),
            (float(p[0]), float(p[1]), float(p[2])),
            str(d.get("state", "")),
            str(d.get("session", "")),
        )


@dataclass(frozen=True)
class Window:
    """The most recent stored entries (oldest first) and the all-time count."""

    entries: list[Entry]
    total: int


@dataclass
class Link:
    """One in-flight message of a student: its window for the next message, and its write.

    ``written`` resolves once this entry *and every earlier one* of the student is stored (or
    given up on), so writes land in order and a reader never misses an earlier message.
    """

    window: asyncio.Future[list[Entry] | None]
    written: asyncio.Future[None]
    previous: Link | None = None

    def finish(self) -> None:
        """Resolve ``window`` (if unset) now and ``written`` once the previous link is written."""
        if not self.window.done():
            self.window.set_result(None)
        prev, self.previous = self.previous, None
        if prev is not None and not prev.written.done():
            prev.written.add_done_callback(lambda _: self.finish())
        elif not self.written.done():
            self.written.set_result(None)


def _payload(user_id: str, entry: Entry) -> dict[str, Any]:
    return {"user": user_id, "entry": {**entry.to_doc(), "id": uuid.uuid4().hex}}


def _retrieve(task: asyncio.Task[Window]) -> None:
    if not task.cancelled():
        task.exception()


class HistoryStore:
    """Reads and bounded appends of student histories, with per-student write ordering."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        limit: int,
        max_pending_writes: int,
        warn_every_s: float = 10.0,
        outbox: Outbox | None = None,
    ) -> None:
        self.db = db
        self.col = db[STUDENTS]
        self.limit = limit
        self.max_pending_writes = max_pending_writes
        self.warn_every_s = warn_every_s
        self._chain: dict[str, Link] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._last_warning: dict[str, float] = {}
        self.failed_reads = 0
        self.failed_writes = 0
        self.outbox = outbox or Outbox("emotion-history", self._store, key=target(db))

    @property
    def dropped_writes(self) -> int:
        """Entries lost because the outbox was full (the only way an entry is lost)."""
        return self.outbox.stats.dropped

    # ---- raw operations -------------------------------------------------------------------
    async def read(self, user_id: str, n: int) -> Window:
        """Last ``n`` entries (oldest first); an empty window for an unknown student."""
        doc = await self.col.find_one({"_id": user_id}, {"history": {"$slice": -n}, "total": 1})
        if doc is None:
            return Window([], 0)
        entries = [Entry.from_doc(d) for d in doc.get("history") or []]
        entries.sort(key=lambda e: e.timestamp)
        return Window(entries, int(doc.get("total", len(entries))))

    async def append(self, user_id: str, entry: Entry) -> None:
        await self._store([_payload(user_id, entry)])

    def _op(self, payload: dict[str, Any]) -> UpdateOne:
        doc = payload["entry"]
        return UpdateOne(
            {"_id": payload["user"], "history.id": {"$ne": doc["id"]}},
            {
                "$push": {"history": {"$each": [doc], "$slice": -self.limit}},
                "$inc": {"total": 1},
                "$set": {"updated_at": datetime.now(UTC)},
            },
            upsert=True,
        )

    async def _store(self, payloads: list[dict[str, Any]]) -> None:
        """Outbox writer: ordered appends; a duplicate key means the entry is stored already (replay)."""
        ops = [self._op(p) for p in payloads]
        start = 0
        while start < len(ops):
            try:
                await self.col.bulk_write(ops[start:], ordered=True)
                return
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors or errors[0].get("code") != 11000:
                    raise
                start += int(errors[0]["index"]) + 1

    async def get(self, user_id: str, n: int, timeout: float | None) -> Window:
        """For GetTrajectory: NOT_FOUND for an unknown student, UNAVAILABLE if MongoDB fails."""
        previous = self._chain.get(user_id)  # read your own writes: Analyze may have just answered
        try:
            async with asyncio.timeout(timeout):
                if previous is not None and not previous.written.done():
                    await asyncio.shield(previous.written)
                window = await self.read(user_id, n)
        except PyMongoError as exc:
            raise Unavailable(f"mongodb unavailable: {type(exc).__name__}", dependency="mongodb") from exc
        if window.total == 0 and not window.entries:
            raise NotFound(f"no history for user {user_id!r}", reason="UNKNOWN_USER", field="user_id")
        return window

    # ---- Analyze path ---------------------------------------------------------------------
    def begin(self, user_id: str, n: int) -> tuple[asyncio.Task[Window], Link]:
        """Start fetching the student's last ``n`` entries now; returns (fetch task, this message's link).

        While the previous message of the same student is in flight, its window (plus its own
        entry) is handed over in memory instead of waiting for its write and reading it back.
        The caller must finish the link with :meth:`commit` or :meth:`abandon`.
        """
        loop = asyncio.get_running_loop()
        previous = self._chain.get(user_id)
        link = Link(loop.create_future(), loop.create_future(), previous)
        self._chain[user_id] = link

        def forget(_: asyncio.Future[None]) -> None:
            if self._chain.get(user_id) is link:
                del self._chain[user_id]

        link.written.add_done_callback(forget)

        async def fetch() -> Window:
            if previous is not None:
                handed = await asyncio.shield(previous.window)
                if handed is not None:
                    return Window(handed[-n:], -1)
                if not previous.written.done():
                    await asyncio.shield(previous.written)
            return await self.read(user_id, n)

        task = loop.create_task(fetch())
        task.add_done_callback(_retrieve)  # a failed read nobody waited for must not warn at exit
        return task, link

    def commit(self, user_id: str, entry: Entry, link: Link, window: list[Entry] | None) -> None:
        """Hand ``window + entry`` to the student's next message and append ``entry`` in the background.

        ``window`` is None when this message's history could not be read (the next message then
        reads MongoDB itself).
        """
        if not link.window.done():
            link.window.set_result(None if window is None else [*window, entry])
        payload = _payload(user_id, entry)
        if len(self._writes) >= self.max_pending_writes:
            self.outbox.put([payload])  # too many appends in flight: kept on disk, replayed in order
            self.abandon(link)
            return

        async def write() -> None:
            try:
                prev = link.previous
                if prev is not None and not prev.written.done():
                    await asyncio.shield(prev.written)  # keep the student's entries in order
                await self.outbox.write([payload])  # an outage queues it; only a rejected write raises
            except PyMongoError as exc:
                self.failed_writes += 1
                self.warn("history write rejected by mongodb: %s", type(exc).__name__, slot="write")
            finally:
                self.abandon(link)

        task = asyncio.get_running_loop().create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    @staticmethod
    def abandon(link: Link) -> None:
        """Release the link (no window to hand over, nothing left to write)."""
        link.finish()

    def warn(self, msg: str, *args: object, slot: str = "read") -> None:
        """Log a warning at most every ``warn_every_s`` seconds per ``slot`` (read / write)."""
        now = time.monotonic()
        if now - self._last_warning.get(slot, -self.warn_every_s) >= self.warn_every_s:
            self._last_warning[slot] = now
            log.warning(msg, *args)

    async def drain(self, timeout: float) -> None:
        """On shutdown: wait for background writes, then replay the outbox within ``timeout``
        (what MongoDB does not take in time stays on disk for the next start)."""
        if self._writes:
            pending = set(self._writes)
            _, left = await asyncio.wait(pending, timeout=timeout)
            for t in left:
                t.cancel()
            for t in left:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        await self.outbox.close(timeout)
