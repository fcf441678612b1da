"""Background housekeeping and the schedule.

Every BENCHMARK_SCHEDULE_CHECK_SECONDS (and at least once per lease length) a replica ends
runs whose replica stopped heartbeating, and, when BENCHMARK_SCHEDULE_HOURS > 0, starts a run
of every suite that is due. "Due" and "free" are decided by one atomic lease update in MongoDB
per suite, so any number of replicas can run this loop against the same database and a suite
is never run twice at once nor more often than the schedule asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.benchmark.config import BenchmarkSettings
from services.benchmark.runs import RunManager
from services.benchmark.store import Document

log = logging.getLogger("masterx.benchmark.scheduler")


class Scheduler:
    def __init__(self, manager: RunManager, cfg: BenchmarkSettings) -> None:
        self.manager = manager
        self.cfg = cfg
        self._stop = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self.cfg.schedule_hours > 0

    async def tick(self) -> Document | None:
        """One pass: reap dead runs, then start the due suites (if scheduling is on)."""
        reaped = await self.manager.reap_stale()
        if reaped:
            log.warning("ended runs of stopped replicas", extra={"runs": reaped})
        if not self.enabled:
            return None
        doc = await self.manager.start_due(
            self.cfg.schedule_providers,
            max_items=self.cfg.schedule_max_items,
            every_seconds=self.cfg.schedule_hours * 3600,
        )
        if doc is not None:
            log.info("scheduled run started", extra={"run_id": doc["_id"], "categories": doc["categories"]})
        return doc

    def request_stop(self) -> None:
        """Make :meth:`run_forever` return after the current tick.

        Shutdown does not rely on cancellation alone: on Python 3.11 the MongoDB driver can lose a
        cancel that lands mid-request, and a lost cancel would leave this loop running forever.
        """
        self._stop.set()

    async def run_forever(self) -> None:
        interval = (
            min(self.cfg.schedule_check_seconds, self.cfg.lease_seconds) if self.enabled else self.cfg.lease_seconds
        )
        while not self._stop.is_set():
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed tick (router or MongoDB down) is retried next time
                log.warning("scheduler tick failed", extra={"error": str(exc)[:300]})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stop.wait()
