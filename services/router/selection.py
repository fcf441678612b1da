"""Ranking providers for one request: category weights, one cost-quality knob, exclusions.

score = (wq*quality + ws*speed + wc*cost) / (wq + ws + wc), with the category's base weights
and the knob x in [0, 1] scaling quality by 2x and cost by 2(1-x): x=0.5 is the category's
balance, x=1 ignores cost, x=0 ignores quality (cheapest acceptable: providers under the
minimum quality are ranked after every acceptable one). Excluded providers (breaker open,
budget spent, model not loaded) stay in the list, last, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.router.scores import ScoreBook

#: (quality, speed, cost) base weights per category.
CATEGORY_WEIGHTS: Mapping[str, tuple[float, float, float]] = {
    "coding": (0.60, 0.15, 0.25),
    "math": (0.60, 0.15, 0.25),
    "research": (0.50, 0.20, 0.30),
    "language": (0.50, 0.20, 0.30),
    "empathy": (0.55, 0.30, 0.15),
    "general": (0.35, 0.30, 0.35),
}
BELOW_MIN_PENALTY = 1000.0


@dataclass
class Ranked:
    provider: str
    model: str
    score: float
    quality: float
    speed: float
    cost: float
    breaker_state: str
    excluded: bool
    reason: str
    score_source: str


def weights(category: str, knob: float) -> tuple[float, float, float]:
    wq, ws, wc = CATEGORY_WEIGHTS.get(category, CATEGORY_WEIGHTS["general"])
    return wq * 2 * knob, ws, wc * 2 * (1 - knob)


def rank(
    providers: Iterable[str],
    category: str,
    knob: float,
    book: ScoreBook,
    *,
    breaker_states: Mapping[str, str],
    exclusions: Mapping[str, str],
    min_quality: float,
) -> list[Ranked]:
    """All providers, best first; excluded ones last. Pure and allocation-light (runs per request)."""
    wq, ws, wc = weights(category, knob)
    total = wq + ws + wc
    out: list[Ranked] = []
    for name in providers:
        s = book.get(name, category)
        score = (wq * s.quality + ws * s.speed + wc * s.cost) / total
        state = breaker_states.get(name, "closed")
        excluded_reason = exclusions.get(name, "")
        if state == "open":
            excluded_reason = excluded_reason or "breaker open"
        if excluded_reason:
            reason = f"excluded: {excluded_reason}"
        elif s.quality < min_quality:
            reason = f"quality {s.quality:.0f} under minimum {min_quality:.0f}: ranked after acceptable providers"
        else:
            reason = f"{category} q={s.quality:.0f} s={s.speed:.0f} c={s.cost:.0f} knob={knob:.2f}"
            if state == "half_open":
                reason += " (breaker half-open: trial call)"
        out.append(
            Ranked(
                name,
                book.specs[name].model,
                round(score, 3),
                s.quality,
                s.speed,
                s.cost,
                state,
                bool(excluded_reason),
                reason,
                s.source,
            )
        )
    out.sort(
        key=lambda r: (
            r.excluded,
            r.quality < min_quality,
            -r.score,
            r.provider,
        )
    )
    return out


def move_to_front(ranked: list[Ranked], provider: str, reason: str) -> bool:
    """Continuity: put ``provider`` first if it is an eligible candidate."""
    for i, r in enumerate(ranked):
        if r.provider == provider and not r.excluded:
            r.reason = f"{reason}; {r.reason}"
            ranked.insert(0, ranked.pop(i))
            return True
    return False
