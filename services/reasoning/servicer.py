"""ReasoningService's gRPC surface: each RPC goes to its handler, bounded by the caller's deadline.

The handlers (``reason_rpc``, ``practice_rpc``, ``thinking_rpc``) check the request fields
(INVALID_ARGUMENT naming the field) and turn proto into the domain types of ``mcts/``,
``budget/``, ``practice/`` and ``controller.py`` (conversions in ``convert.py``); the domain code
never sees a proto. Calls only arrive once the app has started (the runtime's readiness
interceptor answers UNAVAILABLE before that).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from masterx.common.v1 import common_pb2
from masterx.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from masterx_runtime.deadline import Deadline
from services.reasoning import convert

if TYPE_CHECKING:
    from services.reasoning.app import ReasoningApp


class ReasoningServicer(reasoning_pb2_grpc.ReasoningServiceServicer):
    """Every RPC delegates to its handler within the caller's deadline (Reason hands the deadline
    to the search, which ends in time with the best path so far)."""

    def __init__(self, app: ReasoningApp) -> None:
        self.app = app

    async def Reason(
        self, request: reasoning_pb2.ReasonRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[reasoning_pb2.ReasonEvent]:
        async for event in self.app.reason_handler().run(request, Deadline.from_context(context)):
            yield event

    async def AllocateBudget(
        self, request: reasoning_pb2.AllocateBudgetRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.TokenBudget:
        return convert.token_budget(self.app.allocator.allocate(convert.budget_request(request)))

    async def PlanPracticeSession(
        self, request: reasoning_pb2.PlanPracticeSessionRequest, context: grpc.aio.ServicerContext
    ) -> reasoning_pb2.PracticePlan:
        return await Deadline.from_context(context).run(self.app.practice.plan(request))

    async def GenerateProblem(
        self, request: reasoning_pb2.GenerateProblemRequest, context: grpc.aio.ServicerContext
    ) -> reasoning_pb2.GeneratedProblem:
        return await Deadline.from_context(context).run(self.app.practice.generate_problem(request))

    async def ExplainTrace(
        self, request: reasoning_pb2.ExplainTraceRequest, context: grpc.aio.ServicerContext
    ) -> reasoning_pb2.ExplainTraceResponse:
        return self.app.practice.explain(request)

    async def UpdateMastery(
        self, request: reasoning_pb2.UpdateMasteryRequest, context: grpc.aio.ServicerContext
    ) -> reasoning_pb2.StudentMastery:
        return await Deadline.from_context(context).run(self.app.practice.update_mastery(request))

    async def GetMastery(
        self, request: reasoning_pb2.GetMasteryRequest, context: grpc.aio.ServicerContext
    ) -> reasoning_pb2.StudentMastery:
        return await Deadline.from_context(context).run(self.app.practice.get_mastery(request))

    async def DecideThinking(
        self, request: reasoning_pb2.DecideThinkingRequest, context: grpc.aio.ServicerContext
    ) -> reasoning_pb2.ThinkingDecision:
        return await Deadline.from_context(context).run(self.app.thinking.decide(request))

    async def GetTurnReasoning(
        self, request: reasoning_pb2.GetTurnReasoningRequest, context: grpc.aio.ServicerContext
    ) -> reasoning_pb2.TurnReasoning:
        return await Deadline.from_context(context).run(self.app.thinking.turn_reasoning(request))
