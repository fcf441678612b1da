"""Conversions between the protobuf contract and the service's plain Python types."""

from __future__ import annotations

from typing import Any

from masterx.common.v1 import common_pb2
from masterx.reasoning.v1 import reasoning_pb2
from services.reasoning.budget.allocator import Budget, BudgetRequest
from services.reasoning.controller import Decision
from services.reasoning.mcts.prompts import StudentState
from services.reasoning.mcts.tree import Node, SearchResult
from services.reasoning.practice.explain import SkillNote, StepView
from services.reasoning.practice.generator import Bounds, Problem, Trace
from services.reasoning.practice.mastery import MasteryState, SkillRecord

_LEARNING_STATES = {
    common_pb2.LEARNING_STATE_CONFUSED: "confused",
    common_pb2.LEARNING_STATE_FRUSTRATED: "frustrated",
    common_pb2.LEARNING_STATE_ANXIOUS: "anxious",
    common_pb2.LEARNING_STATE_BORED: "bored",
    common_pb2.LEARNING_STATE_ENGAGED: "engaged",
    common_pb2.LEARNING_STATE_CONFIDENT: "confident",
    common_pb2.LEARNING_STATE_NEUTRAL: "neutral",
}
_READINESS = {
    common_pb2.READINESS_LEVEL_NOT_READY: "not_ready",
    common_pb2.READINESS_LEVEL_LOW: "low",
    common_pb2.READINESS_LEVEL_MODERATE: "moderate",
    common_pb2.READINESS_LEVEL_HIGH: "high",
    common_pb2.READINESS_LEVEL_OPTIMAL: "optimal",
}
PURPOSES = {
    reasoning_pb2.PURPOSE_FOCUS: "focus",
    reasoning_pb2.PURPOSE_REINFORCE: "reinforce",
    reasoning_pb2.PURPOSE_REVIEW: "review",
    reasoning_pb2.PURPOSE_CHALLENGE: "challenge",
}
PART_TYPES = {
    reasoning_pb2.PART_TYPE_ABACUS: "abacus",
    reasoning_pb2.PART_TYPE_VISUALIZATION: "visualization",
    reasoning_pb2.PART_TYPE_LINEAR: "linear",
}
PURPOSE_IDS = {v: k for k, v in PURPOSES.items()}
PART_TYPE_IDS = {v: k for k, v in PART_TYPES.items()}


def learning_state(emotion: common_pb2.EmotionResult) -> str:
    return _LEARNING_STATES.get(emotion.learning_state, "neutral")


def readiness(emotion: common_pb2.EmotionResult) -> str:
    return _READINESS.get(emotion.readiness.level, "")


def student_state(emotion: common_pb2.EmotionResult) -> StudentState:
    return StudentState(
        learning_state=_LEARNING_STATES.get(emotion.learning_state, "neutral"),
        primary_emotion=emotion.primary_emotion,
        readiness=_READINESS.get(emotion.readiness.level, ""),
    )


def budget_request(req: reasoning_pb2.AllocateBudgetRequest) -> BudgetRequest:
    return BudgetRequest(
        query=req.query,
        learning_state=_LEARNING_STATES.get(req.emotion.learning_state, ""),
        primary_emotion=req.emotion.primary_emotion,
        readiness=_READINESS.get(req.emotion.readiness.level, ""),
        cognitive_load=req.context.cognitive_load if req.context.HasField("cognitive_load") else None,
        context_window=req.context_window,
        max_output_tokens=req.max_output_tokens,
        prompt_tokens=req.prompt_tokens,
    )


def token_budget(budget: Budget) -> common_pb2.TokenBudget:
    return common_pb2.TokenBudget(
        reasoning_tokens=budget.reasoning_tokens,
        answer_tokens=budget.answer_tokens,
        complexity=budget.complexity,
        recommend_deep_thinking=budget.recommend_deep_thinking,
        factors=[common_pb2.BudgetFactor(name=f.name, value=f.value, detail=f.detail) for f in budget.factors],
    )


def step(node: Node) -> reasoning_pb2.ReasoningStep:
    msg = reasoning_pb2.ReasoningStep(
        node_id=str(node.index),
        depth=node.depth,
        content=node.text,
        value=node.value,
        visits=node.visits,
        terminal=node.answer is not None,
        answer=node.answer or "",
        reward=node.reward,
        reward_source=node.source,
        prior=node.prior,
    )
    if node.parent is not None:
        msg.parent_id = str(node.parent.index)
    if node.strategy is not None:
        msg.strategy = int(node.strategy)  # type: ignore[assignment]
    return msg


def result(res: SearchResult, return_tree: bool) -> reasoning_pb2.ReasonResult:
    usage = res.usage
    provider, model = usage.main_provider
    out = reasoning_pb2.ReasonResult(
        answer=res.answer,
        confidence=res.confidence,
        path=[step(n) for n in res.path],
        usage=common_pb2.Usage(
            tokens=common_pb2.TokenUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.input_tokens + usage.output_tokens,
                estimated=usage.estimated,
            ),
            cost_usd=usage.cost_usd,
            provider=provider,
            model=model,
        ),
        search=reasoning_pb2.SearchUsage(
            iterations=res.iterations,
            nodes=len(res.nodes) - 1,
            tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
            wall_ms=res.wall_ms,
            generations=usage.calls,
            failed_generations=usage.failed_calls,
            widenings=res.widenings,
            merged_samples=res.merged,
        ),
        stop_reason=res.stop_reason,
        answer_votes=res.votes,
    )
    if return_tree:
        out.tree.nodes.extend(step(n) for n in res.nodes)
    return out


def bounds_msg(bounds: Bounds) -> reasoning_pb2.ComplexityBounds:
    msg = reasoning_pb2.ComplexityBounds()
    if bounds.min is not None:
        msg.min = bounds.min
    if bounds.max is not None:
        msg.max = bounds.max
    return msg


def bounds_of(msg: reasoning_pb2.ComplexityBounds) -> Bounds:
    return Bounds(msg.min if msg.HasField("min") else None, msg.max if msg.HasField("max") else None)


def trace_msg(trace: Trace) -> reasoning_pb2.GenerationTrace:
    return reasoning_pb2.GenerationTrace(
        steps=[
            reasoning_pb2.TraceStep(
                term=s.term,
                total_before=s.total_before,
                total_after=s.total_after,
                skills=list(s.skills),
                complexity_cost=s.cost,
            )
            for s in trace.steps
        ],
        total_complexity_cost=trace.total_cost,
        bounds=bounds_msg(trace.bounds),
        skill_mastery=[
            reasoning_pb2.SkillMasteryContext(
                skill=c.skill,
                mastery=int(c.state),  # type: ignore[arg-type]
                base_cost=c.base_cost,
                multiplier=c.multiplier,
                effective_cost=c.effective_cost,
            )
            for c in trace.skill_context
        ],
        purpose=PURPOSE_IDS.get(trace.purpose, 0),  # type: ignore[arg-type]
        part_type=PART_TYPE_IDS.get(trace.part_type, 0),  # type: ignore[arg-type]
        rejected_over_max=trace.rejected_over_max,
        rejected_under_min=trace.rejected_under_min,
    )


def problem_msg(problem: Problem) -> reasoning_pb2.GeneratedProblem:
    return reasoning_pb2.GeneratedProblem(terms=problem.terms, answer=problem.answer, trace=trace_msg(problem.trace))


def trace_views(trace: reasoning_pb2.GenerationTrace) -> tuple[list[StepView], dict[str, SkillNote]]:
    steps = [StepView(s.term, s.total_before, s.total_after, tuple(s.skills), s.complexity_cost) for s in trace.steps]
    notes = {
        c.skill: SkillNote(
            MasteryState(c.mastery).label if c.mastery in MasteryState._value2member_map_ else "unknown",
            c.base_cost,
            c.multiplier,
            c.effective_cost,
        )
        for c in trace.skill_mastery
    }
    return steps, notes


def mastery_msg(
    student_id: str, records: list[SkillRecord], states: dict[str, MasteryState]
) -> reasoning_pb2.StudentMastery:
    return reasoning_pb2.StudentMastery(
        student_id=student_id,
        skills=[
            reasoning_pb2.SkillMastery(
                skill=r.skill,
                level=r.level,
                last_practiced_at=r.last_practiced_at,
                mastered_at=r.mastered_at,
                state=int(states[r.skill]),  # type: ignore[arg-type]
            )
            for r in records
        ],
    )


def limits_msg(limits: Any) -> reasoning_pb2.SearchLimits:
    """SearchLimits from a controller :class:`~services.reasoning.controller.Limits` or its stored dict."""
    get = limits.get if isinstance(limits, dict) else lambda k, d=0: getattr(limits, k, d)
    return reasoning_pb2.SearchLimits(
        max_iterations=int(get("max_iterations", 0)),
        max_width=int(get("max_width", 0)),
        max_widenings=int(get("max_widenings", 0)),
        max_wall_ms=int(get("max_wall_ms", 0)),
    )


def decision_msg(decision: Decision, recent_turns: int) -> reasoning_pb2.ThinkingDecision:
    return reasoning_pb2.ThinkingDecision(
        deep_thinking=decision.deep_thinking,
        source=str(decision.source),
        limits=limits_msg(decision.limits),
        reasons=[reasoning_pb2.DecisionReason(code=r.code, detail=r.detail) for r in decision.reasons],
        complexity=decision.complexity,
        score=decision.score,
        threshold=decision.threshold,
        recent_turns=recent_turns,
    )


def _stored_step(doc: dict[str, Any]) -> reasoning_pb2.ReasoningStep:
    msg = reasoning_pb2.ReasoningStep(
        node_id=str(doc["id"]),
        depth=int(doc["depth"]),
        content=str(doc["content"]),
        value=float(doc["value"]),
        visits=int(doc["visits"]),
        terminal=doc.get("answer") is not None,
        answer=doc.get("answer") or "",
        reward=float(doc["reward"]),
        reward_source=str(doc.get("source", "")),
        prior=float(doc.get("prior", 0.0)),
    )
    if doc.get("parent") is not None:
        msg.parent_id = str(doc["parent"])
    msg.strategy = int(doc.get("strategy", 0))  # type: ignore[assignment]
    return msg


def turn_reasoning(doc: dict[str, Any]) -> reasoning_pb2.TurnReasoning:
    """A stored turn document (see ``services/reasoning/turns.py``) as the RPC's answer."""
    out = reasoning_pb2.TurnReasoning(
        turn_id=doc["turn_id"],
        session_id=doc.get("session_id", ""),
        user_id=doc.get("user_id", ""),
        created_at=float(doc.get("created_at", 0.0)),
        expires_at=float(doc.get("expires_at", 0.0)),
    )
    dec = doc.get("decision")
    if isinstance(dec, dict):
        out.decision.CopyFrom(
            reasoning_pb2.ThinkingDecision(
                deep_thinking=bool(dec["deep_thinking"]),
                source=str(dec["source"]),
                limits=limits_msg(dec.get("limits", {})),
                reasons=[reasoning_pb2.DecisionReason(code=r["code"], detail=r["detail"]) for r in dec["reasons"]],
                complexity=float(dec["complexity"]),
                score=float(dec["score"]),
                threshold=float(dec["threshold"]),
            )
        )
    chain = doc.get("result")
    if isinstance(chain, dict):
        out.has_result = True
        out.truncated = bool(chain.get("truncated", False))
        nodes = {n["id"]: n for n in chain["nodes"]}
        tokens = common_pb2.TokenUsage(
            input_tokens=int(chain["input_tokens"]),
            output_tokens=int(chain["output_tokens"]),
            total_tokens=int(chain["input_tokens"]) + int(chain["output_tokens"]),
            estimated=bool(chain.get("estimated", False)),
        )
        out.result.CopyFrom(
            reasoning_pb2.ReasonResult(
                answer=chain["answer"],
                confidence=float(chain["confidence"]),
                path=[_stored_step(nodes[i]) for i in chain["path"] if i in nodes],
                usage=common_pb2.Usage(
                    tokens=tokens,
                    cost_usd=float(chain["cost_usd"]),
                    provider=chain.get("provider", ""),
                    model=chain.get("model", ""),
                ),
                search=reasoning_pb2.SearchUsage(
                    iterations=int(chain["iterations"]),
                    nodes=int(chain["node_count"]),
                    tokens=int(chain["output_tokens"]),
                    cost_usd=float(chain["cost_usd"]),
                    wall_ms=float(chain["wall_ms"]),
                    generations=int(chain["calls"]),
                    failed_generations=int(chain["failed_calls"]),
                    widenings=int(chain.get("widenings", 0)),
                    merged_samples=int(chain.get("merged", 0)),
                ),
                stop_reason=chain["stop_reason"],
                tree=reasoning_pb2.SearchTree(nodes=[_stored_step(n) for n in chain["nodes"]]),
                answer_votes={str(k): int(v) for k, v in chain.get("votes", [])},
                stored=True,
            )
        )
    return out
