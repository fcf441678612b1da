"""Dynamic micro-batching over a few inference worker threads.

Every text (from Analyze, AnalyzeBatch or StreamAnalyze) is queued with a future. ``workers``
threads take texts from the queue: a free worker takes the first waiting text, lets more join for
at most ``max_wait`` (or until ``max_size``, and never more than its fair share of what is
waiting, so the other workers are not left idle), runs them in one model call, and hands the
results back to the event loop in one callback. Texts queued while the workers are busy form
the next batches, so under load batches grow by themselves; an idle service answers a lone
request after at most ``max_wait``. Texts whose caller has gone (cancelled, deadline passed)
are dropped before inference.

With one ONNX Runtime intra-op thread per call, ``workers`` model calls run at once (ONNX
Runtime releases the GIL and its session is thread-safe), one per core, instead of one call
spread over several spinning intra-op threads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from masterx_runtime.errors import DeadlineExceeded, Unavailable

log = logging.getLogger("masterx.emotion.batcher")

R = TypeVar("R")


@dataclass
class _Item(Generic[R]):
    text: str
    future: asyncio.Future[R]
    deadline: float | None  # time.monotonic() after which nobody waits for the answer


_STOP = None  # queued once per worker by close()

# A finished batch on its way to the event loop: (live, expired, results, error, seconds).
_Done = tuple[list[_Item[R]], list[_Item[R]], Sequence[R] | None, BaseException | None, float]


@dataclass
class BatchStats:
    """What the batcher did: batch-size histogram and totals (exposed in health details)."""

    sizes: Counter[int] = field(default_factory=Counter)
    texts: int = 0
    batches: int = 0
    dropped: int = 0
    busy_seconds: float = 0.0

    def snapshot(self) -> dict[str, object]:
        return {
            "batches": self.batches,
            "texts": self.texts,
            "dropped": self.dropped,
            "mean_batch_size": round(self.texts / self.batches, 2) if self.batches else 0.0,
            "max_batch_size": max(self.sizes) if self.sizes else 0,
            "busy_seconds": round(self.busy_seconds, 3),
        }


def usable_cpus() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU limit if any."""
    cores = len(os.sched_getaffinity(0))
    for path, parse in (
        (Path("/sys/fs/cgroup/cpu.max"), _cgroup2_quota),
        (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _cgroup1_quota),
    ):
        try:
            quota = parse(path)
        except (OSError, ValueError):
            continue
        if quota is not None:
            return max(1, min(cores, math.ceil(quota)))
    return cores


def _cgroup2_quota(path: Path) -> float | None:
    quota, period = path.read_text().split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _cgroup1_quota(path: Path) -> float | None:
    quota = int(path.read_text())
    if quota <= 0:
        return None
    return quota / int((path.parent / "cpu.cfs_period_us").read_text())


def worker_count(workers: int, intra_op_threads: int) -> int:
    """``workers`` if set, else usable cores divided by the intra-op threads of each call (>= 1)."""
    if workers > 0:
        return workers
    cores = usable_cpus()
    per_call = intra_op_threads if intra_op_threads > 0 else cores
    return max(1, cores // per_call)


def batch_take(max_size: int, waiting: int, workers: int) -> int:
    """How many texts a free worker takes: its fair share of what waits, 1..max_size."""
    return max(1, min(max_size, math.ceil(waiting / max(1, workers))))


class MicroBatcher(Generic[R]):
    """Queue texts, run them in batches through ``predict`` on ``workers`` threads."""

    def __init__(
        self,
        predict: Callable[[list[str]], Sequence[R]],
        *,
        max_size: int,
        max_wait_s: float,
        workers: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._predict = predict
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.workers = workers
        self.stats = BatchStats()
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[_Item[R] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Finished batches wait here for the event loop; one wake-up (call_soon_threadsafe)
        # delivers all that finished before the loop got to it.
        self._done: deque[_Done[R]] = deque()
        self._wake_pending = False

    def start(self) -> None:
        """Start the worker threads (results are delivered on the calling event loop)."""
        if self._threads:
            return
        self._loop = asyncio.get_running_loop()
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"emotion-infer-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    async def close(self) -> None:
        """Stop the workers after their current batch, fail what is still queued."""
        if self._closed:
            return
        self._closed = True
        self._fail_queued()
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        for t in threads:
            await asyncio.to_thread(t.join, 30.0)
        self._fail_queued()

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and not item.future.done():
                item.future.set_exception(Unavailable("emotion service is shutting down", dependency="model"))

    def submit_many(self, texts: Sequence[str], deadline: float | None = None) -> list[asyncio.Future[R]]:
        """Queue texts; each future resolves with its own result (batches form across callers).

        ``deadline`` is in the running loop's ``time()``.
        """
        if self._closed or not self._threads:
            raise Unavailable("emotion model is not ready", dependency="model")
        loop = asyncio.get_running_loop()
        mono = None if deadline is None else time.monotonic() + (deadline - loop.time())
        futures: list[asyncio.Future[R]] = []
        for t in texts:
            fut: asyncio.Future[R] = loop.create_future()
            self._queue.put(_Item(t, fut, mono))
            futures.append(fut)
        return futures

    async def predict(self, text: str, deadline: float | None = None) -> R:
        """Result for one text; cancelling the caller drops the text if it has not run yet."""
        (fut,) = self.submit_many([text], deadline)
        return await fut

    # ---- worker threads --------------------------------------------------------------------
    def _collect(self, first: _Item[R]) -> tuple[list[_Item[R]], bool]:
        """The batch that starts with ``first``; True when a stop sentinel was met."""
        batch = [first]
        # What already waits is shared fairly with the other workers; company that arrives
        # during max_wait may fill the batch up to max_size.
        share = batch_take(self.max_size, 1 + self._queue.qsize(), self.workers)
        wait_until = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_size:
            try:
                if len(batch) >= share:
                    raise queue.Empty
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = wait_until - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _work(self) -> None:
        loop = self._loop
        assert loop is not None
        get, single = self._queue.get, self.max_size == 1
        while True:
            first = get()
            if first is None:
                return
            # one text per call (the per-text model): nothing to collect
            batch, stop = ([first], False) if single else self._collect(first)
            now = time.monotonic()
            live: list[_Item[R]] = []
            expired: list[_Item[R]] = []
            for item in batch:
                # done() = the caller cancelled (read across threads: it only ever turns True)
                if item.future.done() or (item.deadline is not None and now >= item.deadline):
                    expired.append(item)
                else:
                    live.append(item)
            results: Sequence[R] | None = None
            error: BaseException | None = None
            started = time.perf_counter()
            if live:
                try:
                    results = self._predict([i.text for i in live])
                except Exception as exc:  # handed to every waiting caller
                    log.exception("inference failed for a batch of %d", len(live))
                    error = exc
            elapsed = time.perf_counter() - started
            self._done.append((live, expired, results, error, elapsed))
            # Wake the loop unless a wake-up is already on its way: that drain resets the flag
            # before it empties the deque, so it also takes what was appended just now.
            if not self._wake_pending:
                self._wake_pending = True
                try:
                    loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    return
            if stop:
                return

    def _drain(self) -> None:
        """On the event loop: deliver every batch the workers have finished."""
        self._wake_pending = False
        done = self._done
        while done:
            try:
                self._deliver(*done.popleft())
            except Exception:  # as the loop would log a failed callback; the rest still go out
                log.exception("could not deliver a batch's results")

    def _deliver(
        self,
        live: list[_Item[R]],
        expired: list[_Item[R]],
        results: Sequence[R] | None,
        error: BaseException | None,
        elapsed: float,
    ) -> None:
        """On the event loop: resolve the futures of one batch and count it."""
        for item in expired:
            self.stats.dropped += 1
            if not item.future.done():
                item.future.set_exception(DeadlineExceeded("deadline passed while queued for the model"))
        if not live:
            return
        if error is not None or results is None:
            exc = error or RuntimeError("model returned no results")
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item, result in zip(live, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
        # counted after the answers are out, so a failing on_batch strands no caller
        self.stats.sizes[len(live)] += 1
        self.stats.batches += 1
        self.stats.texts += len(live)
        self.stats.busy_seconds += elapsed
        if self._on_batch is not None:
            self._on_batch(len(live), elapsed)
