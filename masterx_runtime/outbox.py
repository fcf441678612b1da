"""A bounded, persisted outbox: writes a store cannot take right now wait on local disk, in order.

Used for every write MasterX must not lose when MongoDB is down (router ledger charges, emotion
history entries, benchmark item results). :meth:`Outbox.write` hands documents to the store
directly while it answers; when a write fails with a *transient* error (connection refused,
timeout, server selection, :class:`~masterx_runtime.errors.Unavailable`) the documents go into a
SQLite file under ``MASTERX_DATA_DIR`` instead, and every later write queues behind them until a
background flusher has replayed the backlog, oldest first, with capped exponential backoff. So the
store sees writes in the order they were made, and the caller never waits on a dead store longer
than its first failed call.

Guarantees and limits:

* **Bounded**: at most ``MASTERX_OUTBOX_MAX_ENTRIES`` documents wait; beyond that new documents
  are dropped, and every drop is counted (``masterx_outbox_dropped_total``, ``/health``) and
  logged at ERROR.
* **Durable across restarts**: the file is keyed by outbox name and store target and locked by the
  process that holds it; a process that finds a file left behind (crash, SIGKILL, shutdown during
  an outage) replays it. A second replica on the same host gets its own file.
* **At least once**: a write that reached the store just before the connection broke is replayed,
  so writers make replays harmless (unique ``_id`` per document, duplicate-key = already written).
* A document the store *rejects* (not a transient error) is written alone, and if it still fails
  it is counted as ``rejected`` and logged, so one bad document never blocks the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import bson
from bson.codec_options import CodecOptions
from prometheus_client import Counter, Gauge
from pymongo.errors import ConnectionFailure, PyMongoError

from masterx_runtime.config import load
from masterx_runtime.errors import Unavailable
from masterx_runtime.settings import ReliabilitySettings
from masterx_runtime.tasks import stop_tasks, wait_event

log = logging.getLogger("masterx.outbox")

Document = dict[str, Any]
Writer = Callable[[list[Document]], Awaitable[None]]

PENDING = Gauge("masterx_outbox_pending", "Writes waiting in the outbox for their store", ["outbox"])
QUEUED = Counter("masterx_outbox_queued_total", "Writes put into the outbox (store down or behind)", ["outbox"])
REPLAYED = Counter("masterx_outbox_replayed_total", "Outbox writes replayed into their store", ["outbox"])
DROPPED = Counter("masterx_outbox_dropped_total", "Writes dropped because the outbox was full", ["outbox"])
REJECTED = Counter("masterx_outbox_rejected_total", "Outbox writes the store rejected (not retried)", ["outbox"])

_CODEC: CodecOptions[Document] = CodecOptions(tz_aware=True)
_FIRST_RETRY_S = 0.1
_LOG_EVERY_S = 10.0
_OPEN: weakref.WeakSet[Outbox] = weakref.WeakSet()


def is_transient(exc: BaseException) -> bool:
    """True for failures that mean "the store is not reachable now" (retry later), not "bad write"."""
    if isinstance(exc, ConnectionFailure | Unavailable | OSError | TimeoutError):
        return True
    return isinstance(exc, PyMongoError) and (exc.timeout or exc.has_error_label("RetryableWriteError"))


def default_dir(cfg: ReliabilitySettings) -> Path:
    return Path(cfg.data_dir) if cfg.data_dir else Path(tempfile.gettempdir()) / "masterx-outbox"


@dataclass
class OutboxStats:
    """What one outbox did since the process started (``/health`` shows it)."""

    pending: int = 0
    written_direct: int = 0
    queued: int = 0
    replayed: int = 0
    recovered: int = 0  # found on disk at start (left by an earlier process)
    dropped: int = 0
    rejected: int = 0
    store_up: bool = True
    last_error: str = ""


class Outbox:
    """One store's write queue. ``key`` names the store target (URL + database) so a file left
    behind is only ever replayed into the store it was meant for."""

    def __init__(
        self,
        name: str,
        writer: Writer,
        *,
        key: str = "",
        cfg: ReliabilitySettings | None = None,
        transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        self.name = name
        self._writer = writer
        self._transient = transient
        self.cfg = cfg if cfg is not None else load(ReliabilitySettings)
        self.stats = OutboxStats()
        self._idle = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._last_log: dict[str, float] = {}
        self._lock_file: IO[str] | None = None
        self.path = self._open(key)
        self._db: sqlite3.Connection | None = self._connect()
        self.stats.pending = self.stats.recovered = self._count()
        PENDING.labels(name).set(self.stats.pending)
        if self.stats.pending:
            self._idle.clear()
            log.warning(
                "outbox has writes left by an earlier process; replaying them",
                extra={"outbox": name, "writes": self.stats.pending, "path": str(self.path)},
            )
            with contextlib.suppress(RuntimeError):  # no running loop: the first write starts the flusher
                self._ensure_flusher()
        else:
            self._idle.set()
        _OPEN.add(self)

    # ---- file ---------------------------------------------------------------------------------

    def _open(self, key: str) -> Path:
        folder = default_dir(self.cfg)
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(f"{self.name}|{key}".encode()).hexdigest()[:12]
        for i in range(256):
            stem = f"{self.name}-{digest}" + (f"-{i}" if i else "")
            lock = open(folder / f"{stem}.lock", "a")  # noqa: SIM115 - held for the outbox's lifetime
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._lock_file = lock
            return folder / f"{stem}.sqlite"
        raise OSError(f"no free outbox file for {self.name} in {folder}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # survives a process crash; an OS crash may lose the last commits
        db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, doc BLOB NOT NULL)")
        return db

    def _count(self) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # ---- writing ------------------------------------------------------------------------------

    async def write(self, docs: Sequence[Document]) -> bool:
        """Store ``docs`` now, or queue them if the store is down or a backlog waits; True if stored now.

        Raises only what the store raises for a non-transient error on a direct write (a bad
        document), so the caller can report it; transient failures never reach the caller.
        """
        if not docs:
            return True
        if self.stats.pending == 0 and self.stats.store_up:
            try:
                await self._writer(list(docs))
            except Exception as exc:
                if not self._transient(exc):
                    raise
                self._mark_down(exc)
            else:
                self.stats.written_direct += len(docs)
                return True
        self.put(docs)
        return False

    def put(self, docs: Sequence[Document]) -> int:
        """Queue ``docs`` on disk for the flusher (no store call); returns how many were kept."""
        if self._db is None:
            raise RuntimeError(f"outbox {self.name} is closed")
        room = max(0, self.cfg.outbox_max_entries - self.stats.pending)
        keep, drop = list(docs[:room]), len(docs) - min(room, len(docs))
        if keep:
            blobs = [(bson.encode(d),) for d in keep]
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT INTO outbox (doc) VALUES (?)", blobs)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.stats.pending += len(keep)
            self.stats.queued += len(keep)
            QUEUED.labels(self.name).inc(len(keep))
            PENDING.labels(self.name).set(self.stats.pending)
            self._idle.clear()
            self._ensure_flusher()
        if drop:
            self.stats.dropped += drop
            DROPPED.labels(self.name).inc(drop)
            self._log(
                "dropped",
                logging.ERROR,
                "outbox full: writes dropped",
                dropped=drop,
                dropped_total=self.stats.dropped,
                max_entries=self.cfg.outbox_max_entries,
            )
        return len(keep)

    def _mark_down(self, exc: BaseException) -> None:
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.stats.store_up:
            self.stats.store_up = False
            log.warning(
                "store not reachable; writes are kept in the outbox until it is back",
                extra={"outbox": self.name, "error": self.stats.last_error},
            )

    def _log(self, slot: str, level: int, msg: str, **extra: Any) -> None:
        now = time.monotonic()
        if now - self._last_log.get(slot, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[slot] = now
            log.log(level, msg, extra={"outbox": self.name, **extra})

    # ---- flushing -----------------------------------------------------------------------------

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._run(), name=f"outbox-{self.name}")

    async def _run(self) -> None:
        delay = _FIRST_RETRY_S
        while self.stats.pending > 0 and self._db is not None:
            rows = self._db.execute(
                "SELECT seq, doc FROM outbox ORDER BY seq LIMIT ?", (self.cfg.outbox_batch,)
            ).fetchall()
            if not rows:
                self.stats.pending = 0
                break
            docs = [bson.decode(blob, codec_options=_CODEC) for _, blob in rows]
            try:
                await self._writer(docs)
            except Exception as exc:
                if self._transient(exc):
                    self._mark_down(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.cfg.outbox_retry_max_seconds)
                    continue
                if not await self._one_by_one(docs):
                    continue  # the store went away meanwhile: retry the batch (replays are harmless)
            else:
                self.stats.replayed += len(docs)
                REPLAYED.labels(self.name).inc(len(docs))
            if not self.stats.store_up:
                log.info("store is back; outbox replayed", extra={"outbox": self.name, "pending": self.stats.pending})
            self.stats.store_up = True
            delay = _FIRST_RETRY_S
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (rows[-1][0],))
            self.stats.pending = max(0, self.stats.pending - len(rows))
            PENDING.labels(self.name).set(self.stats.pending)
        if self.stats.pending == 0:
            self._idle.set()

    async def _one_by_one(self, docs: list[Document]) -> bool:
        """After a non-transient batch failure: write each document alone; False if the store went down."""
        for doc in docs:
            try:
                await self._writer([doc])
            except Exception as exc:
                if self._transient(exc):
                    self._mark_down(exc)
                    return False
                self.stats.rejected += 1
                REJECTED.labels(self.name).inc()
                log.error(
                    "store rejected an outbox write; not retried",
                    extra={"outbox": self.name, "error": f"{type(exc).__name__}: {exc}"[:300]},
                )
            else:
                self.stats.replayed += 1
                REPLAYED.labels(self.name).inc()
        return True

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued (``timeout`` None = as long as it takes); True when empty."""
        if self.stats.pending == 0:
            return True
        self._ensure_flusher()
        if timeout is None:
            await self._idle.wait()
            return True
        return await wait_event(self._idle, timeout)

    async def close(self, timeout: float = 2.0) -> None:
        """Replay what the store takes within ``timeout``; what is left stays on disk for the next start."""
        if self._db is None:
            return
        await self.drain(timeout)
        await stop_tasks([self._flusher])
        db, self._db = self._db, None
        left = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        db.close()
        if left:
            log.warning(
                "outbox not empty at shutdown; kept on disk and replayed at the next start",
                extra={"outbox": self.name, "writes": left, "path": str(self.path)},
            )
        else:  # nothing left: leave no files behind (the lock file goes last, while still held)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path.with_suffix(".lock"))
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        _OPEN.discard(self)

    def snapshot(self) -> dict[str, Any]:
        return asdict(self.stats)


def snapshot() -> dict[str, dict[str, Any]]:
    """Stats of every open outbox in this process, for ``/health``."""
    return {box.name: box.snapshot() for box in sorted(_OPEN, key=lambda b: b.name)}
