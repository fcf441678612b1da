"""Executing one benchmark run: items through the router, scoring, the ordered writer, the keeper.

:class:`RunExecution` is the half of :class:`~services.benchmark.runs.RunManager` that runs a
started run to its end (the other half starts, cancels and reports runs). Per run:

- items run concurrently, at most BENCHMARK_PROVIDER_CONCURRENCY per provider across the
  replica, in item-major order (a run stopped by its cost cap still covers every category);
- each answer is scored and queued to the run's single writer, which numbers results (``seq``),
  writes them through the outbox (kept on disk while MongoDB is down) and moves the progress;
- a keeper renews the leases, heartbeats and watches for a cancel request (from any replica);
- the end is recorded after the results, once, with its true cause: scores are aggregated and
  the run marked SUCCEEDED only if no cancel arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from masterx_runtime.errors import Unavailable
from masterx_runtime.outbox import Outbox
from masterx_runtime.tasks import stop_tasks, wait_event
from services.benchmark.aggregate import ScoreRefs, aggregate
from services.benchmark.config import BenchmarkSettings
from services.benchmark.metrics import ITEMS, RUNS
from services.benchmark.router_client import Answer, RouterClient
from services.benchmark.scoring import ItemScorer
from services.benchmark.store import BenchmarkStore, Document
from services.benchmark.suite import Suite, SuiteItem

log = logging.getLogger("masterx.benchmark.runs")

_STOP = object()
_WRITE_BATCH = 100


def _root_cause(exc: BaseException | None) -> str:
    """The first real error inside (possibly nested) exception groups, as text."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"


@dataclass
class ActiveRun:
    run_id: str
    categories: list[str]
    providers: list[str]
    items: dict[str, tuple[SuiteItem, ...]]
    trigger: str
    max_cost: float = 0.0
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str = ""
    stored: int = 0
    answered: int = 0
    first_error: str = ""
    write_seconds: float = 0.0
    cost: float = 0.0
    skipped: int = 0
    task: asyncio.Task[None] | None = None

    def progress(self) -> Document:
        """Cost fields of the run document (written with each heartbeat and at the end)."""
        return {"cost_usd": round(self.cost, 9), "skipped_items": self.skipped}


class RunExecution:
    """Runs started runs to their end; :class:`~services.benchmark.runs.RunManager` builds on it."""

    store: BenchmarkStore
    suites: dict[int, Suite]
    router: RouterClient
    scorer: ItemScorer
    cfg: BenchmarkSettings
    owner: str
    clock: Callable[[], float]
    refs: ScoreRefs
    outbox: Outbox
    _by_name: dict[str, Suite]
    _slots: dict[str, asyncio.Semaphore]
    _active: dict[str, ActiveRun]
    _changed: dict[str, asyncio.Event]
    _stopping: bool

    async def _release(self, run_id: str, names: Sequence[str]) -> None:
        for name in names:
            with contextlib.suppress(Exception):
                await self.store.release_lease(name, owner=self.owner, run_id=run_id)

    def _slot(self, provider: str) -> asyncio.Semaphore:
        if provider not in self._slots:
            self._slots[provider] = asyncio.Semaphore(self.cfg.provider_concurrency)
        return self._slots[provider]

    def _notify(self, run_id: str) -> None:
        event = self._changed.pop(run_id, None)
        if event is not None:
            event.set()

    async def _execute(self, run: ActiveRun) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        work = keeper = writer = None
        outcome, error = "done", ""
        try:
            await self.store.update_active_run(run.run_id, {"state": "RUNNING"})
            self._notify(run.run_id)
            work = asyncio.create_task(self._work(run, queue))
            keeper = asyncio.create_task(self._keep_alive(run))
            writer = asyncio.create_task(self._writer(run, queue))
            done, _ = await asyncio.wait({work, keeper, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done:
                outcome, error = "failed", f"storing results failed: {writer.exception() or 'writer stopped'}"
            elif keeper in done:
                outcome, error = keeper.result()
            elif work.exception() is not None:
                outcome, error = "failed", f"run failed: {_root_cause(work.exception())}"
        except asyncio.CancelledError:
            outcome, error = "cancelled", "service stopping"
            raise
        except Exception as exc:  # recorded on the run, not lost in an unobserved task
            outcome, error = "failed", f"run failed: {_root_cause(exc)}"
        finally:
            await asyncio.shield(self._wind_down(run, queue, work, keeper, writer, outcome, error))

    async def _wind_down(
        self,
        run: ActiveRun,
        queue: asyncio.Queue[Any],
        work: asyncio.Task[None] | None,
        keeper: asyncio.Task[tuple[str, str]] | None,
        writer: asyncio.Task[None] | None,
        outcome: str,
        error: str,
    ) -> None:
        """Stop the item tasks, store what was scored, then record the run's end exactly once."""
        try:
            await stop_tasks((work, keeper), timeout=self.cfg.lease_seconds)
            if writer is not None and not writer.done():
                queue.put_nowait(_STOP)
                await asyncio.gather(writer, return_exceptions=True)
            await self._record_end(run, outcome, error, ended_at=self.clock())
        except Exception:
            log.exception("could not record the end of run %s", run.run_id)
        finally:
            await self._release(run.run_id, run.categories)
            self._active.pop(run.run_id, None)
            self._notify(run.run_id)

    async def _work(self, run: ActiveRun, queue: asyncio.Queue[Any]) -> None:
        # Item-major order (first item of every suite, then the second...): items start in this
        # order per provider, so a run stopped by its cost cap still covers every category.
        async with asyncio.TaskGroup() as group:
            for index in range(max((len(v) for v in run.items.values()), default=0)):
                for name in run.categories:
                    if index < len(run.items[name]):
                        for provider in run.providers:
                            group.create_task(
                                self._run_item(run, self._by_name[name], run.items[name][index], provider, queue)
                            )

    async def _run_item(
        self, run: ActiveRun, suite: Suite, item: SuiteItem, provider: str, queue: asyncio.Queue[Any]
    ) -> None:
        messages = ([("system", suite.system)] if suite.system else []) + [("user", item.prompt)]
        async with self._slot(provider):
            if run.max_cost and run.cost >= run.max_cost:
                run.skipped += 1  # cost cap reached: items not started yet are skipped
                return
            answer: Answer = await self.router.generate_stream(
                provider, suite.category, messages, max_tokens=item.max_tokens, timeout=self.cfg.item_timeout_seconds
            )
            run.cost += answer.cost_usd
        evidence: tuple[str, ...]
        ITEMS.labels(provider, suite.name, "provider_error" if answer.error else "answered").inc()
        if answer.error:
            quality, scorer, evidence = 0.0, item.spec.kind, (f"provider error: {answer.error}",)
        else:
            score = await self.scorer.score(item.spec, answer.text, item.prompt)
            quality, scorer, evidence = score.quality, score.scorer, score.evidence
        queue.put_nowait(
            {
                "run_id": run.run_id,
                "provider": provider,
                "category": suite.name,
                "item_id": item.id,
                "difficulty": item.difficulty,
                "quality": quality,
                "latency_ms": round(answer.latency_ms, 3),
                "ttft_ms": round(answer.ttft_ms, 3),
                "tokens": {
                    "input": answer.input_tokens,
                    "output": answer.output_tokens,
                    "total": answer.total_tokens,
                    "estimated": answer.tokens_estimated,
                },
                "cost_usd": answer.cost_usd,
                "model": answer.model,
                "scorer": scorer,
                "evidence": list(evidence),
                "error": answer.error,
                "suite_version": suite.version,
                "created_at": self.clock(),
            }
        )

    async def _writer(self, run: ActiveRun, queue: asyncio.Queue[Any]) -> None:
        """The only writer of a run's item results: ordered ``seq``, batched inserts, progress."""
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < _WRITE_BATCH:
                batch.append(queue.get_nowait())
            stop = any(doc is _STOP for doc in batch)
            docs = [doc for doc in batch if doc is not _STOP]
            for doc in docs:
                doc["seq"] = run.stored
                run.stored += 1
                if doc["error"]:
                    run.first_error = run.first_error or doc["error"]
                else:
                    run.answered += 1
            if docs:
                started = time.perf_counter()
                await self.outbox.write(docs)  # MongoDB down: kept on disk, stored when it is back
                with contextlib.suppress(Unavailable):  # progress only; the end recounts
                    await self.store.raise_completed(run.run_id, run.stored)
                run.write_seconds += time.perf_counter() - started
                self._notify(run.run_id)
            if stop:
                return

    async def _keep_alive(self, run: ActiveRun) -> tuple[str, str]:
        """Renew leases, heartbeat, and watch for cancellation; returns (outcome, error) when the run must stop."""
        ttl = self.cfg.lease_seconds
        poll = min(1.0, ttl / 3)
        last_renew = self.clock()
        while True:
            if await wait_event(run.cancel, poll):
                return "cancelled", run.stop_reason or "cancelled by request"
            now = self.clock()
            try:
                if now - last_renew >= ttl / 3:
                    for name in run.categories:
                        if not await self.store.renew_lease(
                            name, owner=self.owner, run_id=run.run_id, now=now, ttl=ttl
                        ):
                            return "failed", f"lease of suite {name} lost (renewal too late)"
                    last_renew = now
                doc = await self.store.update_active_run(run.run_id, {"heartbeat_at": now, **run.progress()})
            except Unavailable as exc:  # MongoDB down: the run goes on (results wait in the outbox)
                log.warning("run heartbeat skipped: %s", exc, extra={"run_id": run.run_id})
                continue
            if doc is None:
                return "failed", "run was ended elsewhere"
            if doc.get("cancel_requested"):
                return "cancelled", "cancelled by request"

    async def _record_end(self, run: ActiveRun, outcome: str, error: str, *, ended_at: float) -> None:
        """Store the run's results, then its end; while MongoDB is down, retry until it is back.

        The outcome and its cause are decided before the wait, so a run that ends during an outage
        is recorded afterwards with its real end time and cause (not as a stale heartbeat). Only a
        service stopping meanwhile gives up (the results stay in the outbox; a reaper ends the run).
        """
        delay, retry = 0.2, False
        while True:
            try:
                if not await self.outbox.drain(2.0):
                    raise Unavailable("mongodb down: item results still wait in the outbox", dependency="mongodb")
                if retry:  # an earlier attempt may have written scores before it failed
                    await self.store.delete_scores(run.run_id)
                await self._finalize(run, outcome, error, now=ended_at)
                return
            except Unavailable as exc:
                if self._stopping:
                    raise
                if not retry:
                    log.warning("run end not recorded yet (%s); retrying", exc, extra={"run_id": run.run_id})
                retry = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.lease_seconds / 3, 2.0)

    async def _finalize(self, run: ActiveRun, outcome: str, error: str, *, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        stats = {"write_ms": round(run.write_seconds * 1000, 3)}
        await self.store.update_active_run(run.run_id, {"stats": stats, **run.progress()})
        if outcome == "done" and run.answered == 0:
            outcome, error = "failed", f"no provider answered any item (first error: {run.first_error or 'none'})"
        if outcome == "done":
            items = await self.store.list_items(run.run_id)
            weights = {s.name: s.weights for s in self.suites.values()}
            started = time.perf_counter()
            await self.store.insert_scores(
                aggregate(items, weights, self.refs, run_id=run.run_id, measured_at=now, trigger=run.trigger)
            )
            stats["write_ms"] += round((time.perf_counter() - started) * 1000, 3)
            await self.store.update_active_run(run.run_id, {"stats": stats})
            if (
                await self.store.finish_run(run.run_id, "SUCCEEDED", finished_at=now, require_no_cancel=True)
                is not None
            ):
                RUNS.labels("SUCCEEDED", run.trigger).inc()
                log.info("run succeeded", extra={"run_id": run.run_id, "items": run.stored})
                return
            await self.store.delete_scores(run.run_id)
            outcome, error = "cancelled", "cancelled by request"
        state = "CANCELLED" if outcome == "cancelled" else "FAILED"
        await self.store.finish_run(run.run_id, state, finished_at=now, error=error)
        RUNS.labels(state, run.trigger).inc()
        log.info("run ended", extra={"run_id": run.run_id, "state": state, "error": error, "items": run.stored})
