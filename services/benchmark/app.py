"""Benchmark service application: loads suites, connects MongoDB, prepares the sandbox, runs the schedule.

Health turns SERVING once MongoDB answers and the suites are loaded and the sandbox works; the
router is only needed when a run starts, so a router that is still starting does not hold the
benchmark service back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from masterx.benchmark.v1 import benchmark_pb2_grpc
from masterx_runtime.config import ConfigError, load
from masterx_runtime.readiness import Dependency
from masterx_runtime.server import ServiceApp
from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings, MongoStore
from masterx_runtime.tasks import stop_tasks
from services.benchmark.config import BenchmarkSettings
from services.benchmark.router_client import RouterClient
from services.benchmark.runs import RunManager, default_owner_id
from services.benchmark.scheduler import Scheduler
from services.benchmark.scoring import ItemScorer, Judge, Sandbox, SandboxLimits
from services.benchmark.servicer import BenchmarkServicer
from services.benchmark.store import INDEXES, BenchmarkStore
from services.benchmark.suite import DEFAULT_SUITES_DIR, Suite, SuiteError, load_suites


class BenchmarkApp(ServiceApp):
    name = "benchmark"  # gRPC name and default ports: masterx_runtime/topology.py

    def __init__(
        self,
        cfg: BenchmarkSettings | None = None,
        *,
        mongo: MongoSettings | None = None,
        peers: PeerSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg or load(BenchmarkSettings)
        problems = self.cfg.validate()
        if problems:
            raise ConfigError(problems)
        self.mongo_cfg = mongo or load(MongoSettings)
        self.peers = peers or load(PeerSettings)
        self.clock = clock
        self.owner = self.cfg.instance_id or default_owner_id()
        self.suites: dict[int, Suite] = {}
        self.mongo: MongoStore | None = None
        self.router: RouterClient | None = None
        self.sandbox: Sandbox | None = None
        self.manager: RunManager | None = None
        self.scheduler: Scheduler | None = None
        self._scheduler_task: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        benchmark_pb2_grpc.add_BenchmarkServiceServicer_to_server(BenchmarkServicer(self), server)

    async def start(self) -> None:
        cfg = self.cfg
        try:
            self.suites = load_suites(
                Path(cfg.suites_dir) if cfg.suites_dir else DEFAULT_SUITES_DIR, cfg.min_suite_items
            )
        except SuiteError as exc:
            raise ConfigError([f"BENCHMARK_SUITES_DIR: {exc}"]) from exc
        self.sandbox = Sandbox(
            SandboxLimits(
                timeout_s=cfg.sandbox_timeout_seconds,
                per_test_timeout_s=cfg.sandbox_test_timeout_seconds,
                memory_mb=cfg.sandbox_memory_mb,
                max_processes=cfg.sandbox_max_processes,
                output_bytes=cfg.sandbox_output_bytes,
            ),
            concurrency=cfg.sandbox_concurrency,
            python=cfg.sandbox_python,
            isolation=cfg.sandbox_isolation,
        )
        await self.sandbox.prepare()
        self.mongo = MongoStore(self.mongo_cfg)
        await self.mongo.connect(indexes=INDEXES)
        store = BenchmarkStore(self.mongo.db)
        self.router = RouterClient(self.peers.router_addr)
        scorer = ItemScorer(self.sandbox, self._judge() if cfg.judge_provider else None)
        self.manager = RunManager(store, self.suites, self.router, scorer, cfg, owner=self.owner, clock=self.clock)
        self.scheduler = Scheduler(self.manager, cfg)
        self._scheduler_task = asyncio.create_task(self.scheduler.run_forever(), name="benchmark-scheduler")

    def _judge(self) -> Judge:
        async def judge(system: str, prompt: str) -> str:
            assert self.router is not None
            return await self.router.generate(
                self.cfg.judge_provider,
                [("system", system), ("user", prompt)],
                max_tokens=300,
                timeout=self.cfg.judge_timeout_seconds,
            )

        return judge

    async def stop(self) -> None:
        await stop_tasks([self._scheduler_task])  # re-cancels: a cancel lost in a driver call must not hang stop
        if self.manager is not None:
            await self.manager.shutdown()
        if self.router is not None:
            await self.router.close()
        if self.mongo is not None:
            await self.mongo.close()

    def dependencies(self) -> list[Dependency]:
        """MongoDB is required: runs, leaderboards and leases live there (NOT_SERVING while it is down)."""
        return [self.mongo.dependency(required=True)] if self.mongo is not None else []

    def health_details(self) -> Mapping[str, Any]:
        details: dict[str, Any] = {
            "instance": self.owner,
            "suites": {s.name: s.version for s in self.suites.values()},
            "schedule_hours": self.cfg.schedule_hours,
            "schedule_max_cost_usd": self.cfg.schedule_max_cost_usd,
            "calibration": self.cfg.calibration,
            "calibration_max_cost_usd": self.cfg.calibration_max_cost_usd,
            "judge_provider": self.cfg.judge_provider or None,
            "score_mode": self.cfg.score_mode,
        }
        if self.sandbox is not None:
            details.update(self.sandbox.describe())
        if self.manager is not None:
            details["active_runs"] = self.manager.active_runs()
        return details
