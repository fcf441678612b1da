"""Dynamic micro-batching: concurrent requests share one model call.

Every text (from Analyze, AnalyzeBatch or StreamAnalyze) is queued with a future. One collector
task takes the first waiting text, lets more join for at most ``max_wait`` (or until
``max_size``), and runs the batch in a single worker thread, so exactly one inference runs at a
time and the event loop stays free. While a batch runs, new texts queue up and form the next
batch, so under load batches grow by themselves; an idle service answers a lone request after
at most ``max_wait``. Texts whose caller has gone (cancelled, deadline passed) are dropped
before inference.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from masterx_runtime.errors import DeadlineExceeded, Unavailable
from masterx_runtime.tasks import stop_tasks

log = logging.getLogger("masterx.emotion.batcher")

R = TypeVar("R")


@dataclass
class _Item(Generic[R]):
    text: str
    future: asyncio.Future[R]
    deadline: float | None  # loop.time() after which nobody waits for the answer


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


class MicroBatcher(Generic[R]):
    """Queue texts, run them in batches through ``predict`` on one worker thread."""

    def __init__(
        self,
        predict: Callable[[list[str]], Sequence[R]],
        *,
        max_size: int,
        max_wait_s: float,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._predict = predict
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Item[R]] = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="emotion-infer")
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="emotion-batcher")

    async def close(self) -> None:
        """Stop collecting, fail what is still queued, release the worker thread."""
        self._closed = True
        await stop_tasks([self._task])
        self._task = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(Unavailable("emotion service is shutting down", dependency="model"))
        self._executor.shutdown(wait=True, cancel_futures=True)

    def run_direct(self, texts: list[str]) -> Sequence[R]:
        """Blocking call on the caller's thread (warm-up before serving)."""
        return self._predict(texts)

    def submit_many(self, texts: Sequence[str], deadline: float | None = None) -> list[asyncio.Future[R]]:
        """Queue texts; each future resolves with its own result (batches form across callers)."""
        if self._closed or self._task is None:
            raise Unavailable("emotion model is not ready", dependency="model")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for t in texts:
            fut: asyncio.Future[R] = loop.create_future()
            self._queue.put_nowait(_Item(t, fut, deadline))
            futures.append(fut)
        return futures

    async def predict(self, text: str, deadline: float | None = None) -> R:
        """Result for one text; cancelling the caller drops the text if it has not run yet."""
        (fut,) = self.submit_many([text], deadline)
        return await fut

    # ---- collector -----------------------------------------------------------------------
    async def _collect(self) -> list[_Item[R]]:
        first = await self._queue.get()
        batch = [first]
        loop = asyncio.get_running_loop()
        wait_until = loop.time() + self.max_wait_s
        while len(batch) < self.max_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = wait_until - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            now = loop.time()
            live: list[_Item[R]] = []
            for item in batch:
                if item.future.done():  # caller cancelled
                    self.stats.dropped += 1
                elif item.deadline is not None and now >= item.deadline:
                    self.stats.dropped += 1
                    item.future.set_exception(DeadlineExceeded("deadline passed while queued for the model"))
                else:
                    live.append(item)
            if not live:
                continue
            texts = [i.text for i in live]
            started = time.perf_counter()
            try:
                results = await asyncio.shield(loop.run_in_executor(self._executor, self._predict, texts))
            except asyncio.CancelledError:
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(Unavailable("emotion service is shutting down", dependency="model"))
                raise
            except Exception as exc:  # handed to every waiting caller
                log.exception("inference failed for a batch of %d", len(texts))
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            self.stats.sizes[len(live)] += 1
            self.stats.batches += 1
            self.stats.texts += len(live)
            self.stats.busy_seconds += elapsed
            if self._on_batch is not None:
                self._on_batch(len(live), elapsed)
            for item, result in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
