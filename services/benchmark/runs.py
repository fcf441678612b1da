"""Benchmark runs: leases, starting, cancellation, queries (executing a run: ``execution.py``).

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
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from masterx_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from masterx_runtime.outbox import Outbox
from masterx_runtime.stores.mongo_store import target
from masterx_runtime.tasks import wait_event
from services.benchmark.aggregate import ScoreRefs
from services.benchmark.config import BenchmarkSettings
from services.benchmark.execution import ActiveRun, RunExecution
from services.benchmark.router_client import RouterClient
from services.benchmark.scoring import ItemScorer
from services.benchmark.store import TERMINAL_STATES, BenchmarkStore, Document
from services.benchmark.suite import Suite

log = logging.getLogger("masterx.benchmark.runs")


def default_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class SchedulerStats:
    """Time the scheduler spends deciding and launching (not running) suites."""

    ticks: int = 0
    tick_seconds: float = 0.0
    launches: int = 0
    launch_seconds: float = 0.0


class RunManager(RunExecution):
    """Starts, cancels and reports runs of this replica (executing them: :class:`RunExecution`)."""

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
        self._active: dict[str, ActiveRun] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self.scheduler_stats = SchedulerStats()
        self._stopping = False
        #: Item results go through here: stored at once while MongoDB answers, kept on disk while it is down.
        self.outbox = Outbox("benchmark-items", store.insert_items_once, key=target(store.db))

    # ---- starting ---------------------------------------------------------------------------

    def _categories(self, requested: Sequence[str]) -> list[str]:
        """Suite names in request order without repeats; all suites when none are asked for."""
        if not requested:
            return [self.suites[c].name for c in sorted(self.suites)]
        unknown = [name for name in requested if name not in self._by_name]
        if unknown:
            raise InvalidArgument(
                f"unknown category {unknown[0]!r} (no suite for it)", reason="UNKNOWN_CATEGORY", field="categories"
            )
        return list(dict.fromkeys(requested))

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
        categories: Sequence[str],
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
        active = ActiveRun(run_id, names, providers, items, trigger, max_cost)
        self._active[run_id] = active
        active.task = asyncio.create_task(self._execute(active), name=f"benchmark-run-{run_id}")
        log.info(
            "run started", extra={"run_id": run_id, "categories": names, "providers": providers, "trigger": trigger}
        )
        return doc

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
