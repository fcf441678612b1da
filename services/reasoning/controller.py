"""The metacognitive controller: should this message get a deep-thinking search, and how big?

:func:`decide` is a pure function of the message's complexity, the student's learning state and
readiness, the session's recent outcomes (what happened after the last answers) and the price of
the provider expected to answer. Its constants live in ``controller.yaml``; every step of the
decision is returned as a :class:`DecisionReason`. The user's explicit choice always wins (the
limits are still computed, so a forced search gets the same sizing).

Rules, in order:

1. ``score = complexity + emotion_bonus[learning_state]``.
2. Recent outcomes, newest first: when the last answer was followed by a struggling state
   (confused or frustrated), ``+ after_struggle_bonus``, plus ``repeat_bonus`` for each further
   struggling turn in a row, at most ``max_bonus``; the limits are scaled by
   ``struggle_limit_scale`` (and ``weak_search_scale`` more when that answer came from a search
   with confidence below ``weak_search_below``).
3. ``threshold`` rises by ``threshold_penalty`` when the provider costs more than
   ``expensive_above`` USD per 1000 tokens; the limits are scaled by ``limit_scale``.
4. Limits: base values x the learning-state scale x the readiness scale x the factors above,
   clamped; the search width stays the base width.
5. Think when ``score >= threshold``, unless the user chose.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class Source(enum.StrEnum):
    USER = "user"
    CONTROLLER = "controller"


@dataclass(frozen=True)
class Outcome:
    """One earlier turn of the session, and how the student reacted to its answer."""

    deep_thinking: bool
    confidence: float | None  # the search's confidence, None when no search ran
    followed_by: str  # learning state of the student's next message ("" = unknown)


@dataclass(frozen=True)
class ControllerInput:
    complexity: float
    learning_state: str = "neutral"
    readiness: str = ""  # not_ready, low, moderate, high, optimal ("" = unknown)
    recent: Sequence[Outcome] = ()  # newest first
    provider_cost_per_1k: float = 0.0
    user_choice: bool | None = None


@dataclass(frozen=True)
class Limits:
    max_iterations: int
    max_width: int
    max_widenings: int
    max_wall_ms: int


@dataclass(frozen=True)
class DecisionReason:
    code: str
    detail: str


@dataclass(frozen=True)
class Decision:
    deep_thinking: bool
    source: Source
    limits: Limits
    reasons: tuple[DecisionReason, ...]
    complexity: float
    score: float
    threshold: float


@dataclass(frozen=True)
class ControllerConfig:
    """The parsed ``controller.yaml``."""

    threshold: float
    emotion_bonus: Mapping[str, float]
    window: int
    struggle_states: frozenset[str]
    after_struggle_bonus: float
    repeat_bonus: float
    max_bonus: float
    struggle_limit_scale: float
    weak_search_below: float
    weak_search_scale: float
    expensive_above: float
    threshold_penalty: float
    cost_limit_scale: float
    base: Limits
    state_scale: Mapping[str, float] = field(default_factory=dict)
    readiness_scale: Mapping[str, float] = field(default_factory=dict)
    min_iterations: int = 4
    max_iterations_cap: int = 64
    min_wall_ms: int = 5000
    max_wall_ms_cap: int = 120000

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ControllerConfig:
        recent, cost, lim = data["recent"], data["cost"], data["limits"]
        return cls(
            threshold=float(data["threshold"]),
            emotion_bonus={str(k): float(v) for k, v in data.get("emotion_bonus", {}).items()},
            window=int(recent["window"]),
            struggle_states=frozenset(str(s) for s in recent["struggle_states"]),
            after_struggle_bonus=float(recent["after_struggle_bonus"]),
            repeat_bonus=float(recent["repeat_bonus"]),
            max_bonus=float(recent["max_bonus"]),
            struggle_limit_scale=float(recent["struggle_limit_scale"]),
            weak_search_below=float(recent["weak_search_below"]),
            weak_search_scale=float(recent["weak_search_scale"]),
            expensive_above=float(cost["expensive_above"]),
            threshold_penalty=float(cost["threshold_penalty"]),
            cost_limit_scale=float(cost["limit_scale"]),
            base=Limits(
                int(lim["max_iterations"]), int(lim["max_width"]), int(lim["max_widenings"]), int(lim["max_wall_ms"])
            ),
            state_scale={str(k): float(v) for k, v in lim.get("state_scale", {}).items()},
            readiness_scale={str(k): float(v) for k, v in lim.get("readiness_scale", {}).items()},
            min_iterations=int(lim["min_iterations"]),
            max_iterations_cap=int(lim["max_iterations_cap"]),
            min_wall_ms=int(lim["min_wall_ms"]),
            max_wall_ms_cap=int(lim["max_wall_ms_cap"]),
        )


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def decide(inp: ControllerInput, cfg: ControllerConfig) -> Decision:
    """The decision for one message (pure; see the module docstring for the rules)."""
    reasons: list[DecisionReason] = []
    complexity = _clamp(inp.complexity, 0.0, 1.0)
    reasons.append(DecisionReason("complexity", f"complexity {complexity:.2f} (threshold {cfg.threshold:.2f})"))
    score = complexity
    scale = 1.0

    state = inp.learning_state or "neutral"
    bonus = cfg.emotion_bonus.get(state, 0.0)
    state_scale = cfg.state_scale.get(state, 1.0)
    if bonus or state_scale != 1.0:
        score += bonus
        scale *= state_scale
        reasons.append(DecisionReason(f"emotion:{state}", f"{state}: score {bonus:+.2f}, search size x{state_scale:g}"))
    readiness_scale = cfg.readiness_scale.get(inp.readiness, 1.0)
    if readiness_scale != 1.0:
        scale *= readiness_scale
        reasons.append(
            DecisionReason(f"readiness:{inp.readiness}", f"readiness {inp.readiness}: search size x{readiness_scale:g}")
        )

    recent = list(inp.recent)[: cfg.window]
    streak = 0
    for outcome in recent:
        if outcome.followed_by not in cfg.struggle_states:
            break
        streak += 1
    if streak:
        after = min(cfg.max_bonus, cfg.after_struggle_bonus + cfg.repeat_bonus * (streak - 1))
        score += after
        scale *= cfg.struggle_limit_scale
        last = recent[0]
        detail = (
            f"the last answer was followed by {last.followed_by}"
            + (f" ({streak} struggling turns in a row)" if streak > 1 else "")
            + f": score {after:+.2f}, search size x{cfg.struggle_limit_scale:g}"
        )
        reasons.append(DecisionReason("after_struggle", detail))
        if last.deep_thinking and last.confidence is not None and last.confidence < cfg.weak_search_below:
            scale *= cfg.weak_search_scale
            reasons.append(
                DecisionReason(
                    "weak_search",
                    f"that answer came from a search with confidence {last.confidence:.2f}: "
                    f"search size x{cfg.weak_search_scale:g}",
                )
            )

    threshold = cfg.threshold
    if inp.provider_cost_per_1k > cfg.expensive_above:
        threshold += cfg.threshold_penalty
        scale *= cfg.cost_limit_scale
        reasons.append(
            DecisionReason(
                "provider_cost",
                f"provider costs ${inp.provider_cost_per_1k:g}/1k tokens (> ${cfg.expensive_above:g}): "
                f"threshold {threshold:.2f}, search size x{cfg.cost_limit_scale:g}",
            )
        )

    base = cfg.base
    limits = Limits(
        max_iterations=round(_clamp(base.max_iterations * scale, cfg.min_iterations, cfg.max_iterations_cap)),
        max_width=base.max_width,
        max_widenings=max(1, round(base.max_widenings * scale)),
        max_wall_ms=round(_clamp(base.max_wall_ms * scale, cfg.min_wall_ms, cfg.max_wall_ms_cap)),
    )
    score = round(score, 6)
    threshold = round(threshold, 6)
    if inp.user_choice is not None:
        think, source = inp.user_choice, Source.USER
        reasons.append(
            DecisionReason("user_choice", f"the user turned deep thinking {'on' if think else 'off'} (overrides)")
        )
    else:
        think, source = score >= threshold, Source.CONTROLLER
        reasons.append(
            DecisionReason(
                "decision",
                f"score {score:.2f} {'>=' if think else '<'} threshold {threshold:.2f}: "
                + (
                    f"search ({limits.max_iterations} iterations, {limits.max_widenings} widenings, "
                    f"{limits.max_wall_ms} ms)"
                    if think
                    else "answer directly"
                ),
            )
        )
    return Decision(think, source, limits, tuple(reasons), complexity, score, threshold)


def outcomes_from_turns(turns: Sequence[Mapping[str, Any]], current_state: str) -> list[Outcome]:
    """Outcomes, newest first, from a session's stored turns (newest first): each turn's answer is
    followed by the learning state of the next turn's message (the current message for the newest)."""
    out: list[Outcome] = []
    followed = current_state
    for turn in turns:
        result = turn.get("result")
        out.append(
            Outcome(
                deep_thinking=bool(turn.get("deep_thinking", result is not None)),
                confidence=float(result["confidence"]) if isinstance(result, Mapping) else None,
                followed_by=followed,
            )
        )
        followed = str(turn.get("learning_state", ""))
    return out
