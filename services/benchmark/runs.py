"""Executing benchmark runs: leases, items through the router, scoring, storage, cancellation.

One run = some categories x some providers. Lifecycle, all recorded in MongoDB:

1. Leases: the run takes the lease of every suite it covers (all or nothing for on-demand
   runs; the scheduler takes whichever due suites are free).
2. PENDING -> RUNNING. Items run concurrently, at most BENCHMARK_PROVIDER_CONCURRENCY per
   provider across the replica; each answer is scored and queued to a single writer that stores
   results in order (``seq``) and moves the progress counter. Results go through an outbox: while
   MongoDB is down they wait on local disk (the run carries on, heartbeats resume after) and are
   stored when it is back; the run's end is recorded after its results, with its true cause.
3. A keeper renews the leases, writes a heartbeat, and watches for a cancel request (from any
   replica). Lost lease or cancel -> the item tasks are cancelled, the writer stores what was
   already scored, the run ends CANCELLED (or FAILED) with ``completed_items`` recounted.
4. When every item is done: scores are aggregated and written, then the run is marked SUCCEEDED
   only if no cancel arrived meanwhile (otherwise its scores are deleted). Readers only see
   scores of SUCCEEDED runs, so a run never leaves half-written aggregates behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from masterx_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from masterx_runtime.outbox import Outbox
from masterx_runtime.stores.mongo_store import target
from masterx_runtime.tasks import stop_tasks, wait_event
from services.benchmark.aggregate import ScoreRefs, aggregate
from services.benchmark.config import BenchmarkSettings
from services.benchmark.metrics import ITEMS, RUNS
from services.benchmark.router_client import Answer, RouterClient
from services.benchmark.scoring import ItemScorer
from services.benchmark.store import TERMINAL_STATES, BenchmarkStore, Document
from services.benchmark.suite import CATEGORY_NAMES, Suite, SuiteItem

log = logging.getLogger("masterx.benchmark.runs")

_STOP = object()
_WRITE_BATCH = 100


def _root_cause(exc: BaseException | None) -> str:
    """The first real error inside (possibly nested) exception groups, as text."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"


def default_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class _ActiveRun:
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


@dataclass
class SchedulerStats:
    """Time the scheduler spends deciding and launching (not running) suites."""

    ticks: int = 0
    tick_seconds: float = 0.0
    launches: int = 0
    launch_seconds: float = 0.0


class RunManager:
    """Starts, executes, cancels and reports runs of this replica."""

    def __init__(
        self,
        store: BenchmarkStore,
        suites: dict[int, Suite],
        router: RouterClient,
        scorer: ItemScorer,
        cfg: BenchmarkSettings,
        *,
        owner: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.suites = suites
        self.router = router
        self.scorer = scorer
        self.cfg = cfg
        self.owner = owner or cfg.instance_id or default_owner_id()
        self.clock = clock
        self.refs = ScoreRefs(
            cfg.score_mode, cfg.speed_fast_ms, cfg.speed_slow_ms, cfg.cost_cheap_usd, cfg.cost_expensive_usd
        )
        self._by_name = {s.name: s for s in suites.values()}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._active: dict[str, _ActiveRun] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self.scheduler_stats = SchedulerStats()
        self._stopping = False
        #: Item results go through here: stored at once while MongoDB answers, kept on disk while it is down.
        self.outbox = Outbox("benchmark-items", store.insert_items_once, key=target(store.db))

    # ---- starting ---------------------------------------------------------------------------

    def _categories(self, requested: Sequence[int]) -> list[str]:
        if not requested:
            return [self.suites[c].name for c in sorted(self.suites)]
        names: list[str] = []
        for value in requested:
            if value not in self.suites:
                raise InvalidArgument(
                    f"unknown category {value} (no suite for it)", reason="UNKNOWN_CATEGORY", field="categories"
                )
            if self.suites[value].name not in names:
                names.append(self.suites[value].name)
        return names

    async def _providers(self, requested: Sequence[str], timeout: float) -> list[str]:
        available = [p.name for p in await self.router.list_providers(timeout)]
        if not requested:
            if not available:
                raise FailedPrecondition("the router lists no providers to benchmark", reason="NO_PROVIDERS")
            return available
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise InvalidArgument(
                f"unknown provider(s) {', '.join(unknown)}; the router has {', '.join(available) or 'none'}",
                reason="UNKNOWN_PROVIDER",
                field="providers",
            )
        return list(dict.fromkeys(requested))

    async def start(
        self,
        categories: Sequence[int],
        providers: Sequence[str],
        *,
        trigger: str,
        max_items: int,
        timeout: float,
        max_cost_usd: float = 0.0,
    ) -> Document:
        """Start a run now; ALREADY_EXISTS when another run holds the lease of one of its suites."""
        if max_items < 0:
            raise InvalidArgument("max_items_per_suite must be >= 0", field="max_items_per_suite")
        if not max_cost_usd >= 0:  # also rejects NaN
            raise InvalidArgument("max_cost_usd must be >= 0", reason="NEGATIVE_MAX_COST", field="max_cost_usd")
        names = self._categories(categories)
        chosen = await self._providers(providers, timeout)
        run_id = uuid.uuid4().hex
        now = self.clock()
        taken: list[str] = []
        try:
            for name in names:
                if not await self.store.acquire_lease(
                    name, owner=self.owner, run_id=run_id, now=now, ttl=self.cfg.lease_seconds
                ):
                    holder = await self.store.lease_holder(name, now=now)
                    who = f"run {holder.get('run_id')} on {holder.get('owner')}" if holder else "another run"
                    raise AlreadyExists(
                        f"suite {name} is being run by {who}", reason="SUITE_LEASED", field="categories"
                    )
                taken.append(name)
            return await self._launch(run_id, taken, chosen, trigger or "admin", max_items, max_cost_usd)
        except BaseException:
            await self._release(run_id, taken)
            raise

    async def start_due(
        self, providers: Sequence[str], *, max_items: int, every_seconds: float, max_cost_usd: float = 0.0
    ) -> Document | None:
        """Scheduler entry: run every suite whose last run started more than ``every_seconds`` ago and is free."""
        started = time.perf_counter()
        run_id = uuid.uuid4().hex
        now = self.clock()
        taken: list[str] = []
        try:
            for suite in (self.suites[c] for c in sorted(self.suites)):
                if await self.store.acquire_lease(
                    suite.name,
                    owner=self.owner,
                    run_id=run_id,
                    now=now,
                    ttl=self.cfg.lease_seconds,
                    due_before=now - every_seconds,
                ):
                    taken.append(suite.name)
            if not taken:
                return None
            chosen = await self._providers(providers, timeout=10.0)
            doc = await self._launch(run_id, taken, chosen, "schedule", max_items, max_cost_usd)
            self.scheduler_stats.launches += 1
            self.scheduler_stats.launch_seconds += time.perf_counter() - started
            return doc
        except BaseException:
            await self._release(run_id, taken)
            raise
        finally:
            self.scheduler_stats.ticks += 1
            self.scheduler_stats.tick_seconds += time.perf_counter() - started

    async def calibrate(
        self,
        *,
        max_items: int,
        max_cost_usd: float,
        retry_seconds: float,
        max_age_seconds: float,
        only: Sequence[str] = (),
    ) -> Document | None:
        """Scheduler entry: a small run for the listed providers that lack a score in some category.

        A provider is left out while a calibration run that covered it started less than
        ``retry_seconds`` ago (cancelled runs aside), so a failing provider is not retried on
        every pass. The run covers the categories any of its providers lacks and takes their
        leases all or nothing (another run holding one = try again next pass). It pushes the
        schedule back (marks its suites started) only when it covers every listed provider, i.e.
        on a fresh system, so a new provider's calibration does not delay everyone's refresh.
        ``only`` (BENCHMARK_SCHEDULE_PROVIDERS) limits it to those providers.
        """
        listed = [p.name for p in await self.router.list_providers(10.0) if not only or p.name in only]
        if not listed:
            return None
        now = self.clock()
        missing: dict[str, list[str]] = {p: [] for p in listed}
        for suite in (self.suites[c] for c in sorted(self.suites)):
            scored = {d["provider"] for d in await self.store.latest_scores(suite.name, since=now - max_age_seconds)}
            for provider in listed:
                if provider not in scored:
                    missing[provider].append(suite.name)
        recent = await self.store.recent_run_providers("calibration", since=now - retry_seconds)
        chosen = [p for p in listed if missing[p] and p not in recent]
        if not chosen:
            return None
        names = [
            s.name for s in (self.suites[c] for c in sorted(self.suites)) if any(s.name in missing[p] for p in chosen)
        ]
        run_id = uuid.uuid4().hex
        taken: list[str] = []
        try:
            for name in names:
                if not await self.store.acquire_lease(
                    name, owner=self.owner, run_id=run_id, now=now, ttl=self.cfg.lease_seconds
                ):
                    await self._release(run_id, taken)
                    return None
                taken.append(name)
            return await self._launch(
                run_id, taken, chosen, "calibration", max_items, max_cost_usd, mark_started=set(chosen) == set(listed)
            )
        except BaseException:
            await self._release(run_id, taken)
            raise

    async def _launch(
        self,
        run_id: str,
        names: list[str],
        providers: list[str],
        trigger: str,
        max_items: int,
        max_cost: float = 0.0,
        *,
        mark_started: bool = True,
    ) -> Document:
        now = self.clock()
        items = {n: self._by_name[n].items[: max_items or None] for n in names}
        for name in names if mark_started else ():
            await self.store.mark_started(name, owner=self.owner, run_id=run_id, now=now)
        doc: Document = {
            "_id": run_id,
            "state": "PENDING",
            "categories": names,
            "providers": providers,
            "trigger": trigger,
            "total_items": sum(len(v) for v in items.values()) * len(providers),
            "completed_items": 0,
            "started_at": now,
            "finished_at": 0.0,
            "error": "",
            "owner": self.owner,
            "heartbeat_at": now,
            "cancel_requested": False,
            "suite_versions": {n: self._by_name[n].version for n in names},
            "max_items_per_suite": max_items,
            "max_cost_usd": max_cost,
            "cost_usd": 0.0,
            "skipped_items": 0,
        }
        await self.store.create_run(doc)
        active = _ActiveRun(run_id, names, providers, items, trigger, max_cost)
        self._active[run_id] = active
        active.task = asyncio.create_task(self._execute(active), name=f"benchmark-run-{run_id}")
        log.info(
            "run started", extra={"run_id": run_id, "categories": names, "providers": providers, "trigger": trigger}
        )
        return doc

    async def _release(self, run_id: str, names: Sequence[str]) -> None:
        for name in names:
            with contextlib.suppress(Exception):
                await self.store.release_lease(name, owner=self.owner, run_id=run_id)

    # ---- executing --------------------------------------------------------------------------

    def _slot(self, provider: str) -> asyncio.Semaphore:
        if provider not in self._slots:
            self._slots[provider] = asyncio.Semaphore(self.cfg.provider_concurrency)
        return self._slots[provider]

    def _notify(self, run_id: str) -> None:
        event = self._changed.pop(run_id, None)
        if event is not None:
            event.set()

    async def _execute(self, run: _ActiveRun) -> None:
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
        run: _ActiveRun,
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

    async def _work(self, run: _ActiveRun, queue: asyncio.Queue[Any]) -> None:
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
        self, run: _ActiveRun, suite: Suite, item: SuiteItem, provider: str, queue: asyncio.Queue[Any]
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

    async def _writer(self, run: _ActiveRun, queue: asyncio.Queue[Any]) -> None:
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

    async def _keep_alive(self, run: _ActiveRun) -> tuple[str, str]:
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

    async def _record_end(self, run: _ActiveRun, outcome: str, error: str, *, ended_at: float) -> None:
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

    async def _finalize(self, run: _ActiveRun, outcome: str, error: str, *, now: float | None = None) -> None:
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

    # ---- control and queries ----------------------------------------------------------------

    async def get(self, run_id: str) -> Document:
        doc = await self.store.get_run(run_id) if run_id else None
        if doc is None:
            raise NotFound(f"no run {run_id!r}", reason="UNKNOWN_RUN", field="run_id")
        return doc

    async def cancel(self, run_id: str, *, timeout: float) -> Document:
        """Cancel a run (here or on another replica) and wait, within ``timeout``, for it to end."""
        doc = await self.get(run_id)
        if doc["state"] in TERMINAL_STATES:
            raise FailedPrecondition(
                f"run {run_id} already ended {doc['state']}", reason="RUN_FINISHED", field="run_id"
            )
        flagged = await self.store.request_cancel(run_id)
        if flagged is None:
            raise FailedPrecondition(f"run {run_id} already ended", reason="RUN_FINISHED", field="run_id")
        active = self._active.get(run_id)
        if active is not None:
            active.cancel.set()
        elif flagged.get("heartbeat_at", 0.0) < self.clock() - self.cfg.lease_seconds:
            await self.store.finish_run(
                run_id, "CANCELLED", finished_at=self.clock(), error="cancelled (its replica had stopped)"
            )
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            doc = await self.get(run_id)
            if doc["state"] in TERMINAL_STATES or time.monotonic() >= deadline:
                return doc
            await self._wait_change(run_id, min(0.2, max(0.01, deadline - time.monotonic())))

    async def _wait_change(self, run_id: str, timeout: float) -> None:
        await wait_event(self._changed.setdefault(run_id, asyncio.Event()), timeout)

    async def watch(self, run_id: str) -> AsyncIterator[tuple[Document, Document | None]]:
        """Current state first, then every stored item in order, then the final state."""
        doc = await self.get(run_id)
        yield doc, None
        last_seq = -1
        while True:
            terminal = doc["state"] in TERMINAL_STATES
            for item in await self.store.list_items(run_id, after_seq=last_seq):
                last_seq = item["seq"]
                yield doc, item
            if terminal:
                yield doc, None
                return
            await self._wait_change(run_id, 0.5 if run_id not in self._active else 2.0)
            doc = await self.get(run_id)

    async def reap_stale(self) -> list[str]:
        """End runs whose replica stopped heartbeating (FAILED); returns their ids."""
        now = self.clock()
        reaped = []
        for doc in await self.store.stale_runs(now - self.cfg.lease_seconds):
            if doc["_id"] in self._active:
                continue
            ended = await self.store.finish_run(
                doc["_id"], "FAILED", finished_at=now, error=f"replica {doc.get('owner')} stopped heartbeating"
            )
            if ended is not None:
                reaped.append(doc["_id"])
        return reaped

    def active_runs(self) -> list[str]:
        return list(self._active)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel this replica's runs and wait for their records to be closed."""
        self._stopping = True
        tasks = []
        for run in list(self._active.values()):
            run.stop_reason = "service stopping"
            run.cancel.set()
            if run.task is not None:
                tasks.append(run.task)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        await self.outbox.close()

    @staticmethod
    def category_name(value: int) -> str:
        return CATEGORY_NAMES.get(value, "")
