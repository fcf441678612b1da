"""DecideThinking (the metacognitive controller) and GetTurnReasoning (stored chains)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from masterx.reasoning.v1 import reasoning_pb2
from masterx_runtime.errors import InvalidArgument, NotFound, Unavailable
from services.reasoning import convert
from services.reasoning.budget.estimator import ComplexityEstimator
from services.reasoning.controller import ControllerConfig, ControllerInput, Outcome, decide, outcomes_from_turns
from services.reasoning.turns import TurnStore, check_turn_id, checked_query

log = logging.getLogger("masterx.reasoning.thinking")


class ThinkingHandler:
    def __init__(
        self,
        config: ControllerConfig,
        estimator: ComplexityEstimator,
        turns: Callable[[], TurnStore | None],
    ) -> None:
        self.config = config
        self.estimator = estimator
        self.turns = turns

    async def decide(self, req: reasoning_pb2.DecideThinkingRequest) -> reasoning_pb2.ThinkingDecision:
        query = checked_query(req.query, req.turn_id)
        cost = req.provider_cost_per_1k_tokens_usd
        if cost < 0 or not math.isfinite(cost):
            raise InvalidArgument(
                "provider_cost_per_1k_tokens_usd must be a finite number >= 0",
                reason="BAD_COST",
                field="provider_cost_per_1k_tokens_usd",
            )
        complexity = req.budget.complexity if req.HasField("budget") else self.estimator.predict(query)
        state = convert.learning_state(req.emotion)
        store = self.turns()
        docs: list[dict] = []  # type: ignore[type-arg]
        if store is not None and req.session_id:
            try:
                docs = await store.recent(req.session_id, self.config.window, exclude=req.turn_id)
            except Unavailable as exc:  # decide without history rather than fail the turn
                log.warning("recent turns unavailable", extra={"error": str(exc)[:200]})
        outcomes = outcomes_from_turns(docs, state)
        if not outcomes and req.follows_answer:
            outcomes = [Outcome(deep_thinking=False, confidence=None, followed_by=state)]
        decision = decide(
            ControllerInput(
                complexity=complexity,
                learning_state=state,
                readiness=convert.readiness(req.emotion),
                recent=outcomes,
                provider_cost_per_1k=cost,
                user_choice=req.deep_thinking if req.HasField("deep_thinking") else None,
            ),
            self.config,
        )
        if store is not None and req.turn_id:
            try:
                await store.record_decision(
                    req.turn_id,
                    session_id=req.session_id,
                    user_id=req.user_id,
                    learning_state=state,
                    decision=decision,
                )
            except Unavailable as exc:
                log.warning("decision not recorded", extra={"turn_id": req.turn_id, "error": str(exc)[:200]})
        return convert.decision_msg(decision, len(docs))

    async def turn_reasoning(self, req: reasoning_pb2.GetTurnReasoningRequest) -> reasoning_pb2.TurnReasoning:
        check_turn_id(req.turn_id)
        store = self.turns()
        if store is None:
            raise Unavailable("mongodb is not connected yet", dependency="mongodb")
        doc = await store.get(req.turn_id)
        if doc is None:
            raise NotFound(
                f"no stored turn {req.turn_id!r} (unknown or expired)", reason="UNKNOWN_TURN", field="turn_id"
            )
        return convert.turn_reasoning(doc)
