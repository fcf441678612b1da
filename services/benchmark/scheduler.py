"""Background housekeeping and the schedule.

Every BENCHMARK_SCHEDULE_CHECK_SECONDS (and at least once per lease length) a replica ends
runs whose replica stopped heartbeating, and, when BENCHMARK_SCHEDULE_HOURS > 0, starts a run
of every suite that is due. "Due" and "free" are decided by one atomic lease update in MongoDB
per suite, so any number of replicas can run this loop against the same database and a suite
is never run twice at once nor more often than the schedule asks.
"""

from __future__ import annotations

import asyncio
import logging

from services.benchmark.config import BenchmarkSettings
from services.benchmark.runs import RunManager
from services.benchmark.store import Document

log = logging.getLogger("masterx.benchmark.scheduler")


class Scheduler:
    def __init__(self, manager: RunManager, cfg: BenchmarkSettings) -> None:
        self.manager = manager
        self.cfg = cfg

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

    async def run_forever(self) -> None:
        interval = (
            min(self.cfg.schedule_check_seconds, self.cfg.lease_seconds) if self.enabled else self.cfg.lease_seconds
        )
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed tick (router or MongoDB down) is retried next time
                log.warning("scheduler tick failed", extra={"error": str(exc)[:300]})
            await asyncio.sleep(interval)
