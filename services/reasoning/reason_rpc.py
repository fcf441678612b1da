"""The Reason RPC: validate the request, run the search through the router, stream events."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from masterx.reasoning.v1 import reasoning_pb2
from masterx.router.v1 import router_pb2_grpc
from masterx_runtime.deadline import Deadline
from masterx_runtime.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.reasoning import convert
from services.reasoning.config import ReasoningSettings
from services.reasoning.mcts.engine import (
    PathBy,
    ResultEvent,
    Search,
    SearchConfig,
    SearchResult,
    Selection,
    StrategyTables,
)
from services.reasoning.mcts.generator import CompleterStepGenerator
from services.reasoning.mcts.mathcheck import find_problem
from services.reasoning.mcts.rewards import JudgeScorer, RewardMode, RewardModel, RewardSettings
from services.reasoning.router_client import RouterCompleter
from services.reasoning.turns import TurnStore, chain_document, checked_query

log = logging.getLogger("masterx.reasoning.reason")


@dataclass(frozen=True)
class SearchSettings:
    """The parsed ``search.yaml``."""

    defaults: Mapping[str, Any]
    caps: Mapping[str, int]
    tables: StrategyTables
    rewards: RewardSettings

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SearchSettings:
        return cls(
            defaults=dict(data["defaults"]),
            caps={k: int(v) for k, v in data["limits"].items()},
            tables=StrategyTables(
                preferred={k: tuple(v) for k, v in data.get("preferred_strategies", {}).items()},
                priors={k: dict(v) for k, v in data.get("strategy_priors", {}).items()},
            ),
            rewards=RewardSettings.from_mapping(data.get("rewards", {})),
        )


def _bad(message: str, field: str) -> InvalidArgument:
    return InvalidArgument(message, reason="BAD_LIMIT", field=field)


class ReasonHandler:
    def __init__(
        self,
        settings: ReasoningSettings,
        search: SearchSettings,
        router: router_pb2_grpc.RouterServiceStub,
        *,
        call_timeout: float,
        turns: Callable[[], TurnStore | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.search = search
        self.router = router
        self.call_timeout = call_timeout
        self.turns = turns

    def search_config(self, req: reasoning_pb2.ReasonRequest) -> SearchConfig:
        """Request limits over service defaults, validated against the caps."""
        lim, d, caps, s = req.limits, self.search.defaults, self.search.caps, self.settings
        for name in (
            "max_iterations",
            "max_depth",
            "max_width",
            "max_tokens",
            "max_wall_ms",
            "parallelism",
            "step_max_tokens",
            "max_widenings",
        ):
            if getattr(lim, name) < 0:
                raise _bad(f"limits.{name} must not be negative", f"limits.{name}")
        iterations = lim.max_iterations or int(d["max_iterations"])
        depth = lim.max_depth or int(d["max_depth"])
        width = lim.max_width or int(d["max_width"])
        widenings = 0 if lim.disable_widening else lim.max_widenings or int(d.get("max_widenings", 0))
        for name, value in (
            ("max_iterations", iterations),
            ("max_depth", depth),
            ("max_width", width),
            ("max_widenings", widenings),
        ):
            if value > caps[name]:
                raise _bad(f"limits.{name} {value} is above the maximum {caps[name]}", f"limits.{name}")
        if lim.max_cost_usd < 0 or not math.isfinite(lim.max_cost_usd):
            raise _bad("limits.max_cost_usd must be a finite number >= 0", "limits.max_cost_usd")
        if lim.exploration_weight < 0 or not math.isfinite(lim.exploration_weight):
            raise _bad("limits.exploration_weight must be a finite number >= 0", "limits.exploration_weight")
        if not 0 <= lim.early_stop_share <= 1:
            raise _bad("limits.early_stop_share must lie in (0, 1] (0 = default)", "limits.early_stop_share")
        parallelism = lim.parallelism or min(width * int(d.get("parallelism_per_width", 1)), s.max_parallelism)
        if parallelism > s.max_parallelism:
            raise _bad(
                f"limits.parallelism {parallelism} is above the maximum {s.max_parallelism}", "limits.parallelism"
            )
        max_tokens = lim.max_tokens or s.default_max_tokens
        if req.budget.reasoning_tokens > 0:
            max_tokens = min(max_tokens, req.budget.reasoning_tokens)
        if req.selection not in Selection._value2member_map_:
            raise InvalidArgument(f"unknown selection {req.selection}", reason="BAD_ENUM", field="selection")
        if req.best_path_by not in PathBy._value2member_map_:
            raise InvalidArgument(f"unknown best_path_by {req.best_path_by}", reason="BAD_ENUM", field="best_path_by")
        return SearchConfig(
            max_iterations=iterations,
            max_depth=depth,
            max_width=width,
            max_tokens=max_tokens,
            max_cost_usd=lim.max_cost_usd or s.default_max_cost_usd,
            max_wall_ms=lim.max_wall_ms or s.default_max_wall_ms,
            exploration_weight=lim.exploration_weight or float(d["exploration_weight"]),
            parallelism=parallelism,
            early_stop_share=lim.early_stop_share or float(d["early_stop_share"]),
            early_stop=not lim.disable_early_stop,
            min_votes=int(d["min_votes"]),
            min_answer_value=float(d["min_answer_value"]),
            step_max_tokens=lim.step_max_tokens or s.step_max_tokens,
            min_step_tokens=int(d["min_step_tokens"]),
            selection=Selection(req.selection),
            best_by=PathBy(req.best_path_by),
            max_widenings=widenings,
            failed_below=float(d.get("failed_below", 0.1)),
            step_temperature=s.step_temperature,
            widen_temperature_step=float(d.get("widen_temperature_step", 0.2)),
            max_temperature=float(d.get("max_temperature", 1.2)),
        )

    def reward_model(self, req: reasoning_pb2.ReasonRequest, completer: RouterCompleter) -> RewardModel:
        if req.reward_model not in RewardMode._value2member_map_:
            raise InvalidArgument(f"unknown reward_model {req.reward_model}", reason="BAD_ENUM", field="reward_model")
        mode = RewardMode(req.reward_model)
        if mode == RewardMode.JUDGE and not self.settings.judge_enabled:
            raise FailedPrecondition(
                "the judge is disabled (REASONING_JUDGE_ENABLED=0)", reason="JUDGE_DISABLED", field="reward_model"
            )
        if mode == RewardMode.VERIFIER and find_problem(req.query) is None:
            raise InvalidArgument(
                "the verifier needs an arithmetic expression or a one-variable equation in the query",
                reason="NOT_CHECKABLE",
                field="reward_model",
            )
        judge = JudgeScorer(completer, self.search.rewards) if self.settings.judge_enabled else None
        return RewardModel(mode, self.search.rewards, judge)

    async def run(
        self, req: reasoning_pb2.ReasonRequest, deadline: Deadline
    ) -> AsyncIterator[reasoning_pb2.ReasonEvent]:
        query = checked_query(req.query, req.turn_id)
        config = self.search_config(req)
        completer = RouterCompleter(
            self.router,
            user_id=req.user_id,
            category=req.category,
            pinned_provider=req.pinned_provider,
            judge_provider=self.settings.judge_provider,
            call_timeout=self.call_timeout,
        )
        rewards = self.reward_model(req, completer)
        remaining = deadline.remaining()
        if remaining is not None:  # stop early enough to send the result before the caller's deadline
            deadline = deadline.earlier(min(1.0, 0.2 * remaining))
        search = Search(
            query,
            CompleterStepGenerator(completer, temperature=self.settings.step_temperature),
            rewards,
            config,
            student=convert.student_state(req.emotion),
            seed=req.seed,
            tables=self.search.tables,
            deadline=deadline.at(),
        )
        async for event in search.run():
            if isinstance(event, ResultEvent):
                res = event.result
                log.info(
                    "search done",
                    extra={
                        "query_chars": len(query),
                        "stop_reason": res.stop_reason,
                        "iterations": res.iterations,
                        "nodes": len(res.nodes) - 1,
                        "output_tokens": res.usage.output_tokens,
                        "cost_usd": round(res.usage.cost_usd, 6),
                        "wall_ms": round(res.wall_ms, 1),
                        "confidence": round(res.confidence, 3),
                    },
                )
                out = convert.result(res, req.return_tree)
                if req.turn_id:
                    out.stored = await self._store(req, res)
                yield reasoning_pb2.ReasonEvent(result=out)
            else:
                yield reasoning_pb2.ReasonEvent(step=convert.step(event.node))

    async def _store(self, req: reasoning_pb2.ReasonRequest, res: SearchResult) -> bool:
        """Store the chain for its turn; a MongoDB failure is logged, never fails the answer."""
        store = self.turns()
        if store is None:
            return False
        chain = chain_document(res, max_nodes=self.settings.chain_max_nodes, max_chars=self.settings.chain_max_chars)
        try:
            await store.store_chain(req.turn_id, session_id=req.session_id, user_id=req.user_id, chain=chain)
        except Unavailable as exc:
            log.warning("reasoning chain not stored", extra={"turn_id": req.turn_id, "error": str(exc)[:200]})
            return False
        return True
