"""BenchmarkService's gRPC surface: proto -> domain arguments in, domain documents -> proto out.

Checks that name a request field live here (INVALID_ARGUMENT with the field); what a run does is
:class:`~services.benchmark.runs.RunManager`'s business, what is stored is
:class:`~services.benchmark.store.BenchmarkStore`'s. Every call is bounded by the caller's
deadline (:class:`~masterx_runtime.deadline.Deadline`, ``MASTERX_RPC_TIMEOUT_SECONDS`` when the
caller set none). Calls only arrive once the app has started: before that the runtime's readiness
interceptor answers UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc
from masterx.common.v1 import common_pb2
from masterx_runtime.deadline import Deadline
from masterx_runtime.errors import InvalidArgument, Unavailable
from services.benchmark import convert
from services.benchmark.runs import RunManager
from services.benchmark.store import BenchmarkStore
from services.benchmark.suite import CATEGORY_NAMES, Suite

if TYPE_CHECKING:
    from services.benchmark.app import BenchmarkApp

_MAX_HISTORY = 1000


class BenchmarkServicer(benchmark_pb2_grpc.BenchmarkServiceServicer):
    def __init__(self, app: BenchmarkApp) -> None:
        self.app = app

    @property
    def manager(self) -> RunManager:
        if self.app.manager is None:  # the readiness interceptor keeps calls out until start() is done
            raise Unavailable("benchmark service is starting", reason="NOT_SERVING")
        return self.app.manager

    @property
    def store(self) -> BenchmarkStore:
        return self.manager.store

    @property
    def suites(self) -> dict[int, Suite]:
        return self.app.suites

    def _deadline(self, context: grpc.aio.ServicerContext) -> Deadline:
        return Deadline.from_context(context, self.app.peers.rpc_timeout_seconds)

    def _category(self, value: int, *, required: bool, name: str = "category") -> str:
        if value == common_pb2.CATEGORY_UNSPECIFIED and not required:
            return ""
        if value not in CATEGORY_NAMES:
            raise InvalidArgument(f"unknown or unspecified {name} {value}", reason="UNKNOWN_CATEGORY", field=name)
        return CATEGORY_NAMES[value]

    def _since(self, max_age_seconds: int) -> float:
        if max_age_seconds < 0:
            raise InvalidArgument("max_age_seconds must be >= 0", reason="NEGATIVE_MAX_AGE", field="max_age_seconds")
        return self.app.clock() - (max_age_seconds or self.app.cfg.max_age_seconds)

    async def StartRun(
        self, request: benchmark_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> benchmark_pb2.RunStatus:
        deadline = self._deadline(context)
        timeout = deadline.remaining() or 0.0
        doc = await deadline.run(
            self.manager.start(
                [self._category(value, required=True, name="categories") for value in request.categories],
                list(request.providers),
                trigger=request.trigger,
                max_items=request.max_items_per_suite,
                timeout=max(0.05, timeout - 0.05),
                max_cost_usd=request.max_cost_usd,
            )
        )
        return convert.run_status(doc)

    async def WatchRun(
        self, request: benchmark_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[benchmark_pb2.RunProgress]:
        async for doc, item in self.manager.watch(request.run_id):
            if item is None:
                yield benchmark_pb2.RunProgress(status=convert.run_status(doc))
            else:
                yield benchmark_pb2.RunProgress(
                    status=convert.run_status(doc, completed_at_least=int(item["seq"]) + 1),
                    item=convert.item_result(item),
                )

    async def CancelRun(
        self, request: benchmark_pb2.CancelRunRequest, context: grpc.aio.ServicerContext
    ) -> benchmark_pb2.RunStatus:
        deadline = self._deadline(context)
        timeout = deadline.remaining() or 0.0
        doc = await deadline.run(self.manager.cancel(request.run_id, timeout=max(0.0, min(timeout - 0.25, 30.0))))
        return convert.run_status(doc)

    async def GetRun(
        self, request: benchmark_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> benchmark_pb2.RunStatus:
        return convert.run_status(await self._deadline(context).run(self.manager.get(request.run_id)))

    async def ListItemResults(
        self, request: benchmark_pb2.ListItemResultsRequest, context: grpc.aio.ServicerContext
    ) -> benchmark_pb2.ListItemResultsResponse:
        category = self._category(request.category, required=False)
        async with self._deadline(context).timeout():
            await self.manager.get(request.run_id)
            docs = await self.store.list_items(request.run_id, provider=request.provider, category=category)
        return benchmark_pb2.ListItemResultsResponse(items=[convert.item_result(d) for d in docs])

    async def GetLeaderboard(
        self, request: benchmark_pb2.GetLeaderboardRequest, context: grpc.aio.ServicerContext
    ) -> benchmark_pb2.Leaderboard:
        category = self._category(request.category, required=True)
        since = self._since(request.max_age_seconds)
        async with self._deadline(context).timeout():
            docs = await self.store.latest_scores(category, since=since)
        return convert.leaderboard(self.suites[request.category], docs)

    async def GetScores(
        self, request: benchmark_pb2.GetScoresRequest, context: grpc.aio.ServicerContext
    ) -> benchmark_pb2.GetScoresResponse:
        since = self._since(request.max_age_seconds)
        boards = []
        async with self._deadline(context).timeout():
            for value in sorted(self.suites):
                docs = await self.store.latest_scores(CATEGORY_NAMES[value], since=since)
                if docs:
                    boards.append(convert.leaderboard(self.suites[value], docs))
        return benchmark_pb2.GetScoresResponse(
            leaderboards=boards, suites=[convert.suite_message(self.suites[c]) for c in sorted(self.suites)]
        )

    async def GetProviderHistory(
        self, request: benchmark_pb2.GetProviderHistoryRequest, context: grpc.aio.ServicerContext
    ) -> benchmark_pb2.GetProviderHistoryResponse:
        if not request.provider:
            raise InvalidArgument("provider is required", reason="MISSING_PROVIDER", field="provider")
        if request.limit < 0:
            raise InvalidArgument("limit must be >= 0", field="limit")
        category = self._category(request.category, required=False)
        limit = min(request.limit or 50, _MAX_HISTORY)
        async with self._deadline(context).timeout():
            docs = await self.store.provider_history(request.provider, category=category, limit=limit)
        return benchmark_pb2.GetProviderHistoryResponse(scores=[convert.provider_score(d) for d in docs])

    async def ListSuites(
        self, request: benchmark_pb2.ListSuitesRequest, context: grpc.aio.ServicerContext
    ) -> benchmark_pb2.ListSuitesResponse:
        return benchmark_pb2.ListSuitesResponse(
            suites=[convert.suite_message(self.suites[c]) for c in sorted(self.suites)]
        )
