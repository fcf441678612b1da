"""How hard a message is, in [0, 1], when the request carries no ``budget.complexity``.

A deliberately cheap estimate (a few microseconds; no model): longer messages and messages
with markers of multi-step work ("prove", "implement", "step by step", "derivative") score
higher, short look-ups ("what is", "define", "translate") lower. The formula and every
constant are in policy.yaml (``complexity.estimate``)::

    complexity = clamp(base + length_weight * min(1, log(1 + words) / log(1 + long_words))
                       + hard_weight * min(1, hard_hits / 2) - easy_weight * easy_hit, 0, 1)

The reasoning service's AllocateBudget computes a better complexity for every chat turn; the
gateway sends it as ``budget.complexity`` and then this estimate is not used.
"""

from __future__ import annotations

import math
import re

from services.router.policy import EstimateRules

_PUNCT = re.compile(r"[^\w\s'-]")


def estimate_complexity(text: str, rules: EstimateRules) -> float:
    lower = text.lower()
    words = len(lower.split())
    length = min(1.0, math.log1p(words) / math.log1p(rules.long_words))
    hard = sum(1 for m in rules.hard_markers if m in lower)
    padded = f" {_PUNCT.sub(' ', lower)} "
    easy = any(f" {m} " in padded for m in rules.easy_markers)
    value = (
        rules.base
        + rules.length_weight * length
        + rules.hard_weight * min(1.0, hard / 2)
        - (rules.easy_weight if easy and not hard else 0.0)
    )
    return min(1.0, max(0.0, value))


def adjusted_knob(knob: float, complexity: float, *, pivot: float, gain: float) -> float:
    """Difficulty-aware trade-off: hard -> towards quality, easy -> towards cost."""
    return min(1.0, max(0.0, knob + gain * (complexity - pivot)))
