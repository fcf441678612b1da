"""JSON views of service messages, shaped for people and browsers rather than for protobuf."""

from __future__ import annotations

from typing import Any

from masterx.common.v1 import common_pb2
from masterx.reasoning.v1 import reasoning_pb2
from masterx.router.v1 import router_pb2
from services.gateway.protojson import enum_name, enum_value, to_dict

_LS = common_pb2.LearningState.DESCRIPTOR
_RL = common_pb2.ReadinessLevel.DESCRIPTOR
_IL = common_pb2.InterventionLevel.DESCRIPTOR
_TR = common_pb2.Trajectory.DESCRIPTOR
_CAT = common_pb2.Category.DESCRIPTOR
_STRAT = reasoning_pb2.Strategy.DESCRIPTOR


def category_value(name: str | None) -> common_pb2.Category.ValueType:
    """Category enum from its friendly name (None/"" = unspecified: the router decides)."""
    return common_pb2.Category.ValueType(enum_value(_CAT, name)) if name else common_pb2.CATEGORY_UNSPECIFIED


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def pad(p: common_pb2.PAD) -> dict[str, float]:
    return {"pleasure": _r(p.pleasure), "arousal": _r(p.arousal), "dominance": _r(p.dominance)}


def urgency(result: common_pb2.EmotionResult) -> dict[str, Any] | None:
    """The urgency head's estimate (None when the served model has no urgency head)."""
    if not result.HasField("urgency"):
        return None
    u = result.urgency
    return {"probability": _r(u.probability), "score": _r(u.score, 2), "model_version": u.model_version}


def emotion(result: common_pb2.EmotionResult, top: int = 3) -> dict[str, Any]:
    """The emotion summary a chat answer carries: primary, Ekman groups, PAD, urgency, learning
    state, intervention."""
    ranked = sorted(result.scores, key=lambda s: s.probability, reverse=True)[:top]
    return {
        "primary": result.primary_emotion,
        "confidence": _r(result.confidence),
        "ekman_group": result.ekman_group,
        "ekman": {
            "probabilities": {e.group: _r(e.probability) for e in result.ekman_scores},
            "active": list(result.ekman_active),
        },
        "urgency": urgency(result),
        "categories": {enum_name(_CAT, c.category): _r(c.probability) for c in result.category_scores},
        "followup_probability": _r(result.followup_probability),
        "top": [{"label": s.label, "probability": _r(s.probability), "active": s.active} for s in ranked],
        "pad": pad(result.pad),
        "learning_state": enum_name(_LS, result.learning_state),
        "learning_state_scores": {k: _r(v) for k, v in sorted(result.learning_state_scores.items())},
        "readiness": {"score": _r(result.readiness.score), "level": enum_name(_RL, result.readiness.level)},
        "intervention": {
            "level": enum_name(_IL, result.intervention.level),
            "score": _r(result.intervention.score),
            "reasons": list(result.intervention.reasons),
        },
        "trajectory": enum_name(_TR, result.trajectory),
        "pad_ema": pad(result.pad_ema) if result.HasField("pad_ema") else None,
        "model_version": result.model_version,
        "truncated": result.truncated,
    }


def emotion_full(result: common_pb2.EmotionResult) -> dict[str, Any]:
    """Everything of an EmotionResult (all 28 scores), for /api/v1/emotion."""
    out = emotion(result)
    out["scores"] = [{"label": s.label, "probability": _r(s.probability), "active": s.active} for s in result.scores]
    out["latency_ms"] = _r(result.latency_ms, 2)
    return out


def budget(b: common_pb2.TokenBudget) -> dict[str, Any]:
    return to_dict(b)


def decision(d: router_pb2.RoutingDecision) -> dict[str, Any]:
    """Which provider was chosen and why."""
    return {
        "name": d.provider,
        "model": d.model,
        "category": enum_name(_CAT, d.category),
        "category_confidence": _r(d.category_confidence),
        "empathy_override": d.empathy_override,
        "continuity": d.continuity,
        "topic_changed": d.topic_changed,
        "reasons": list(d.reasons),
        "candidates": [
            {
                "provider": c.provider,
                "model": c.model,
                "score": _r(c.score),
                "quality": _r(c.quality, 2),
                "speed": _r(c.speed, 2),
                "cost": _r(c.cost, 2),
                "breaker_state": c.breaker_state,
                "excluded": c.excluded,
                "reason": c.reason,
                "score_source": c.score_source,
            }
            for c in d.candidates
        ],
        "decision_ms": _r(d.decision_ms, 2),
    }


def step(s: reasoning_pb2.ReasoningStep) -> dict[str, Any]:
    return {
        "node_id": s.node_id,
        "parent_id": s.parent_id,
        "depth": s.depth,
        "strategy": enum_name(_STRAT, s.strategy),
        "content": s.content,
        "value": _r(s.value),
        "visits": s.visits,
        "terminal": s.terminal,
        "answer": s.answer,
        "reward": _r(s.reward),
        "reward_source": s.reward_source,
    }


def reasoning(r: reasoning_pb2.ReasonResult) -> dict[str, Any]:
    return {
        "answer": r.answer,
        "confidence": _r(r.confidence),
        "path": [step(s) for s in r.path],
        "stop_reason": r.stop_reason,
        "search": to_dict(r.search),
        "answer_votes": dict(r.answer_votes),
        "usage": usage(r.usage),
    }


def usage(u: common_pb2.Usage) -> dict[str, Any]:
    return {
        "input_tokens": int(u.tokens.input_tokens),
        "output_tokens": int(u.tokens.output_tokens),
        "total_tokens": int(u.tokens.total_tokens),
        "estimated": u.tokens.estimated,
        "cost_usd": round(u.cost_usd, 8),
        "provider": u.provider,
        "model": u.model,
    }


def attempts(items: Any) -> list[dict[str, Any]]:
    return [
        {"provider": a.provider, "outcome": a.outcome, "error": a.error, "latency_ms": _r(a.latency_ms, 2)}
        for a in items
    ]
