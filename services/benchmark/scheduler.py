"""Background housekeeping, calibration and the schedule.

Every BENCHMARK_SCHEDULE_CHECK_SECONDS (and at least once per lease length) a replica

1. ends runs whose replica stopped heartbeating;
2. calibrates (BENCHMARK_CALIBRATION, on by default): when the router lists a provider that
   has no score in some category (first start, a provider added, scores older than
   BENCHMARK_MAX_AGE_SECONDS), it starts a small run for it (BENCHMARK_CALIBRATION_ITEMS per
   suite, capped at BENCHMARK_CALIBRATION_MAX_COST_USD), so the router has evidence without
   anyone starting a run;
3. when BENCHMARK_SCHEDULE_HOURS > 0 (24 by default), starts a run of every suite that is due,
   capped by BENCHMARK_SCHEDULE_MAX_ITEMS and BENCHMARK_SCHEDULE_MAX_COST_USD.

"Due" and "free" are decided by one atomic lease update in MongoDB per suite, so any number of
replicas can run this loop against the same database and a suite is never run twice at once
nor more often than the schedule asks.
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

    @property
    def active(self) -> bool:
        """Whether the loop starts runs (schedule or calibration), i.e. checks at the schedule's pace."""
        return self.enabled or self.cfg.calibration

    async def tick(self) -> Document | None:
        """One pass: reap dead runs, calibrate unscored providers, then start the due suites.

        Returns the run started by this pass (calibration first; the schedule's run when none).
        """
        reaped = await self.manager.reap_stale()
        if reaped:
            log.warning("ended runs of stopped replicas", extra={"runs": reaped})
        started: Document | None = None
        if self.cfg.calibration:
            started = await self.manager.calibrate(
                max_items=self.cfg.calibration_items,
                max_cost_usd=self.cfg.calibration_max_cost_usd,
                retry_seconds=self.cfg.calibration_retry_seconds,
                max_age_seconds=self.cfg.max_age_seconds,
                only=self.cfg.schedule_providers,
            )
            if started is not None:
                log.info(
                    "calibration run started",
                    extra={
                        "run_id": started["_id"],
                        "providers": started["providers"],
                        "categories": started["categories"],
                    },
                )
        if not self.enabled:
            return started
        doc = await self.manager.start_due(
            self.cfg.schedule_providers,
            max_items=self.cfg.schedule_max_items,
            every_seconds=self.cfg.schedule_hours * 3600,
            max_cost_usd=self.cfg.schedule_max_cost_usd,
        )
        if doc is not None:
            log.info("scheduled run started", extra={"run_id": doc["_id"], "categories": doc["categories"]})
        return started or doc

    async def run_forever(self) -> None:
        interval = (
            min(self.cfg.schedule_check_seconds, self.cfg.lease_seconds) if self.active else self.cfg.lease_seconds
        )
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed tick (router or MongoDB down) is retried next time
                log.warning("scheduler tick failed", extra={"error": str(exc)[:300]})
            await asyncio.sleep(interval)
