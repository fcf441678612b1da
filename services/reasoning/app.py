"""Reasoning service application: registers the servicer and owns its lifecycle.

Ready (health SERVING) once MongoDB answers and the soroban move tables are built. The router
is not waited for: it may start later, and Reason answers UNAVAILABLE while it is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from masterx.reasoning.v1 import reasoning_pb2_grpc
from masterx.router.v1 import router_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.config import load
from masterx_runtime.errors import Unavailable
from masterx_runtime.readiness import Dependency
from masterx_runtime.server import ServiceApp
from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings, MongoStore
from services.reasoning.budget.allocator import BudgetAllocator
from services.reasoning.budget.estimator import ComplexityEstimator
from services.reasoning.config import ReasoningSettings, complexity_model_path, load_yaml
from services.reasoning.controller import ControllerConfig
from services.reasoning.practice.generator import warm_tables
from services.reasoning.practice.mastery import PracticeConfig
from services.reasoning.practice.store import INDEXES, MasteryStore
from services.reasoning.practice_rpc import PracticeHandler
from services.reasoning.reason_rpc import ReasonHandler, SearchSettings
from services.reasoning.servicer import ReasoningServicer
from services.reasoning.thinking_rpc import ThinkingHandler
from services.reasoning.turns import INDEXES as TURN_INDEXES
from services.reasoning.turns import TurnStore

log = logging.getLogger("masterx.reasoning")


class ReasoningApp(ServiceApp):
    name = "reasoning"  # gRPC name and default ports: masterx_runtime/topology.py

    def __init__(
        self,
        settings: ReasoningSettings | None = None,
        *,
        mongo: MongoSettings | None = None,
        peers: PeerSettings | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Loads settings and config files now, so a bad one fails the process with exit code 2."""
        self.settings = settings or load(ReasoningSettings)
        self.mongo_settings = mongo or load(MongoSettings)
        self.peers = peers or load(PeerSettings)
        s = self.settings
        factors = load_yaml(s.budget_factors_file, "budget_factors.yaml")
        self.allocator = BudgetAllocator(factors, ComplexityEstimator.load(complexity_model_path(s)))
        self.practice_config = PracticeConfig.from_mapping(load_yaml(s.practice_config_file, "practice.yaml"))
        self.search_settings = SearchSettings.from_mapping(load_yaml(s.search_config_file, "search.yaml"))
        self.practice = PracticeHandler(self.practice_config, self._mastery_store, *(() if clock is None else (clock,)))
        self.controller_config = ControllerConfig.from_mapping(load_yaml(s.controller_config_file, "controller.yaml"))
        self.thinking = ThinkingHandler(self.controller_config, self.allocator.estimator, self._turn_store)
        self._turn_clock = clock or time.time
        self._mongo: MongoStore | None = None
        self._store: MasteryStore | None = None
        self._turns: TurnStore | None = None
        self._router_channel: grpc.aio.Channel | None = None
        self._reason: ReasonHandler | None = None
        self._mongo_connected = False

    def register(self, server: grpc.aio.Server) -> None:
        reasoning_pb2_grpc.add_ReasoningServiceServicer_to_server(ReasoningServicer(self), server)

    def _mastery_store(self) -> MasteryStore:
        if self._store is None:
            raise Unavailable("mongodb is not connected yet", dependency="mongodb")
        return self._store

    def _turn_store(self) -> TurnStore | None:
        return self._turns

    def reason_handler(self) -> ReasonHandler:
        if self._reason is None:
            raise Unavailable("the service is still starting", dependency="router")
        return self._reason

    async def start(self) -> None:
        """Connect MongoDB (retrying until it answers), build the move tables, open the router channel."""
        self._router_channel = channel(self.peers.router_addr)
        self._reason = ReasonHandler(
            self.settings,
            self.search_settings,
            router_pb2_grpc.RouterServiceStub(self._router_channel),
            call_timeout=self.peers.rpc_timeout_seconds,
            turns=self._turn_store,
        )
        tables = asyncio.ensure_future(asyncio.to_thread(warm_tables, self.practice_config.extra_rods))
        self._mongo = MongoStore(self.mongo_settings)
        attempt = 0
        while True:
            try:
                await self._mongo.connect({**INDEXES, **TURN_INDEXES})
                break
            except Unavailable as exc:
                attempt += 1
                if attempt == 1 or attempt % 30 == 0:
                    log.warning("waiting for mongodb", extra={"attempt": attempt, "error": str(exc)[:200]})
                await asyncio.sleep(self.settings.mongo_retry_seconds)
        self._store = MasteryStore(self._mongo.db)
        self._turns = TurnStore(self._mongo.db, ttl_seconds=self.settings.chain_ttl_seconds, clock=self._turn_clock)
        self._mongo_connected = True
        await tables

    async def stop(self) -> None:
        if self._router_channel is not None:
            await self._router_channel.close()
        if self._mongo is not None:
            await self._mongo.close()

    def dependencies(self) -> list[Dependency]:
        """MongoDB is optional: Reason works without it; the practice RPCs answer UNAVAILABLE meanwhile."""
        return [self._mongo.dependency(required=False)] if self._mongo is not None else []

    def health_details(self) -> Mapping[str, Any]:
        return {
            "mongodb": "connected" if self._mongo_connected else "waiting",
            "router_addr": self.peers.router_addr,
            "complexity_model_cv_mae": self.allocator.estimator.metrics.get("cv_mae"),
        }
