"""Reasoning and answer token budgets from complexity, emotion, cognitive load and readiness.

Every step is recorded as a factor (name, multiplier or amount, explanation) in the order it
was applied, so a budget always explains itself. All numbers come from the factors file
(``budget_factors.yaml``), none from code.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from masterx_runtime.errors import InvalidArgument
from services.reasoning.budget.estimator import ComplexityEstimator

DEFAULT_FACTORS = Path(__file__).resolve().parents[1] / "budget_factors.yaml"


@dataclass(frozen=True)
class Factor:
    name: str
    value: float
    detail: str


@dataclass(frozen=True)
class BudgetRequest:
    query: str
    learning_state: str = ""  # "frustrated", ... ("" = unknown)
    primary_emotion: str = ""
    readiness: str = ""  # "not_ready" ... "optimal" ("" = unknown)
    cognitive_load: float | None = None
    context_window: int = 0  # 0 = default
    max_output_tokens: int = 0  # 0 = default
    prompt_tokens: int = 0


@dataclass
class Budget:
    reasoning_tokens: int
    answer_tokens: int
    complexity: float
    recommend_deep_thinking: bool
    factors: list[Factor] = field(default_factory=list)


def _interp(points: Sequence[Sequence[float]], x: float) -> float:
    """Piecewise-linear interpolation through sorted (x, y) points, flat outside them."""
    pts = sorted((float(a), float(b)) for a, b in points)
    if x <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[-1][1]


class BudgetAllocator:
    def __init__(self, factors: Mapping[str, Any], estimator: ComplexityEstimator) -> None:
        self.f = factors
        self.estimator = estimator

    @classmethod
    def from_files(cls, factors_path: Path = DEFAULT_FACTORS, model_path: Path | None = None) -> BudgetAllocator:
        factors = yaml.safe_load(factors_path.read_text())
        estimator = ComplexityEstimator.load(model_path) if model_path else ComplexityEstimator.load()
        return cls(factors, estimator)

    def _state(self, req: BudgetRequest) -> str:
        if req.learning_state:
            return req.learning_state
        return str(self.f.get("primary_emotion_to_state", {}).get(req.primary_emotion, ""))

    def allocate(self, req: BudgetRequest) -> Budget:
        f = self.f
        if not req.query.strip():
            raise InvalidArgument("query is empty", reason="EMPTY_QUERY", field="query")
        limits = f["limits"]
        ctx = req.context_window or int(limits["default_context_window"])
        max_out = req.max_output_tokens or int(limits["default_max_output_tokens"])
        if req.context_window < 0 or req.max_output_tokens < 0 or req.prompt_tokens < 0:
            raise InvalidArgument("token counts must not be negative", reason="NEGATIVE_TOKENS")
        available = ctx - req.prompt_tokens - int(limits["safety_margin_tokens"])
        min_answer = int(limits["min_answer_tokens"])
        if available < min_answer:
            raise InvalidArgument(
                f"prompt_tokens {req.prompt_tokens} leave {max(available, 0)} of the {ctx}-token context window: "
                f"fewer than the {min_answer} an answer needs",
                reason="CONTEXT_FULL",
                field="prompt_tokens",
            )
        factors: list[Factor] = []

        c = self.estimator.predict(req.query)
        top = ", ".join(f"{name} {value:+.2f}" for name, value in self.estimator.contributions(req.query))
        factors.append(Factor("complexity", round(c, 4), f"fitted estimator; strongest features: {top or 'none'}"))

        r_cfg, a_cfg = f["reasoning"], f["answer"]
        threshold = float(r_cfg["threshold"])
        if c < threshold:
            reasoning = 0.0
            factors.append(Factor("reasoning:base", 0, f"complexity {c:.2f} < {threshold}: no reasoning phase"))
        else:
            span = ((c - threshold) / (1 - threshold)) ** float(r_cfg["exponent"])
            reasoning = float(r_cfg["min_tokens"]) + (float(r_cfg["max_tokens"]) - float(r_cfg["min_tokens"])) * span
            factors.append(
                Factor(
                    "reasoning:base",
                    round(reasoning),
                    f"{r_cfg['min_tokens']}-{r_cfg['max_tokens']} tokens scaled by complexity",
                )
            )
        answer = float(a_cfg["min_tokens"]) + (float(a_cfg["max_tokens"]) - float(a_cfg["min_tokens"])) * c ** float(
            a_cfg["exponent"]
        )
        factors.append(
            Factor(
                "answer:base", round(answer), f"{a_cfg['min_tokens']}-{a_cfg['max_tokens']} tokens scaled by complexity"
            )
        )

        state = self._state(req)
        if state:
            em = f["emotion"].get(state)
            if em is None:
                raise InvalidArgument(f"unknown learning state {state!r}", reason="UNKNOWN_STATE", field="emotion")
            a_mult, r_mult = float(em["answer"]), float(em["reasoning"])
            answer *= a_mult
            reasoning *= r_mult
            source = "" if req.learning_state else f" (from primary emotion {req.primary_emotion})"
            factors.append(
                Factor(
                    f"emotion:{state}", a_mult, f"answer x{a_mult}, reasoning x{r_mult}: {em.get('why', '')}{source}"
                )
            )

        if req.cognitive_load is not None:
            load = req.cognitive_load
            if not 0.0 <= load <= 1.0:
                raise InvalidArgument(
                    "cognitive_load must lie in [0, 1]", reason="BAD_LOAD", field="context.cognitive_load"
                )
            a_mult = _interp(f["cognitive_load"]["answer"], load)
            r_mult = _interp(f["cognitive_load"]["reasoning"], load)
            answer *= a_mult
            reasoning *= r_mult
            factors.append(
                Factor(
                    "cognitive_load",
                    round(a_mult, 4),
                    f"load {load:.2f}: answer x{a_mult:.2f}, reasoning x{r_mult:.2f}",
                )
            )

        if req.readiness:
            rd = f["readiness"].get(req.readiness)
            if rd is None:
                raise InvalidArgument(
                    f"unknown readiness level {req.readiness!r}", reason="UNKNOWN_READINESS", field="emotion.readiness"
                )
            a_mult, r_mult = float(rd["answer"]), float(rd["reasoning"])
            answer *= a_mult
            reasoning *= r_mult
            factors.append(Factor(f"readiness:{req.readiness}", a_mult, f"answer x{a_mult}, reasoning x{r_mult}"))

        answer_tokens = max(min_answer, round(answer))
        reasoning_tokens = round(reasoning)
        if answer_tokens > max_out:
            factors.append(
                Factor(
                    "provider:max_output_tokens",
                    max_out,
                    f"answer capped from {answer_tokens} to the provider's {max_out}",
                )
            )
            answer_tokens = max_out
        if answer_tokens > available:
            factors.append(
                Factor(
                    "provider:context_window",
                    available,
                    f"answer capped from {answer_tokens}: {available} tokens left in the context",
                )
            )
            answer_tokens = available
        if reasoning_tokens + answer_tokens > available:
            capped = max(0, available - answer_tokens)
            factors.append(
                Factor(
                    "provider:context_window",
                    capped,
                    f"reasoning capped from {reasoning_tokens}: the answer keeps {answer_tokens} of {available} free tokens",
                )
            )
            reasoning_tokens = capped

        deep_at = float(f["deep_thinking_threshold"])
        deep = c >= deep_at and reasoning_tokens > 0
        if deep:
            factors.append(
                Factor("deep_thinking", deep_at, f"complexity {c:.2f} >= {deep_at}: MCTS deep thinking recommended")
            )
        return Budget(reasoning_tokens, answer_tokens, round(c, 4), deep, factors)
