"""Practice session planning: slots with a purpose, a part type, bounds and a generated problem."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.reasoning.practice.generator import Bounds, Problem, ProblemSpec, generate
from services.reasoning.practice.mastery import CostCalculator, PracticeConfig

PURPOSES = ("focus", "reinforce", "review", "challenge")
PART_TYPES = ("abacus", "visualization", "linear")


@dataclass
class Slot:
    index: int
    purpose: str
    part_type: str
    bounds: Bounds
    problem: Problem


def purpose_sequence(weights: Mapping[str, float], slots: int) -> list[str]:
    """Purposes in proportion to ``weights``, spread evenly (smooth weighted round robin)."""
    names = [p for p in PURPOSES if weights.get(p, 0) > 0]
    total = sum(float(weights[p]) for p in names)
    current = dict.fromkeys(names, 0.0)
    out = []
    for _ in range(slots):
        for p in names:
            current[p] += float(weights[p])
        pick = max(names, key=lambda p: current[p])  # ties: config order (max keeps the first)
        current[pick] -= total
        out.append(pick)
    return out


def bounds_for(cfg: PracticeConfig, purpose: str, part_type: str) -> Bounds:
    lo, hi = cfg.bounds[purpose][part_type]
    return Bounds(None if lo is None else float(lo), None if hi is None else float(hi))


def plan_session(
    calc: CostCalculator,
    cfg: PracticeConfig,
    *,
    slots: int,
    part_types: Sequence[str],
    terms: int,
    seed: int,
) -> list[Slot]:
    """Part types in consecutive blocks (abacus, then visualisation, then linear, as a session
    runs), purposes spread through the session; every slot's problem is generated against the
    configured bounds with the student's costs. Unknown skills count as "learning", so caps keep
    untaught techniques out without a separate allow-list."""
    session = cfg.session
    purposes = purpose_sequence(session["purpose_weights"], slots)
    digits = session.get("digits", {})
    out = []
    for i in range(slots):
        part = part_types[i * len(part_types) // slots]
        purpose = purposes[i]
        bounds = bounds_for(cfg, purpose, part)
        spec = ProblemSpec(
            terms=terms,
            digits=int(digits.get(part, 1)),
            bounds=bounds,
            allow_subtraction=bool(session.get("allow_subtraction", True)),
            seed=seed * 7919 + i,
            purpose=purpose,
            part_type=part,
        )
        out.append(Slot(i, purpose, part, bounds, generate(spec, calc, cfg)))
    return out
