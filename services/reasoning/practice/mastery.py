"""Mastery states (with the recency rules of seed 003) and the per-student skill cost calculator."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.reasoning.practice.soroban import SKILL_SET, category

DAY = 86400.0
LEVELS = ("learning", "practicing", "mastered")


class MasteryState(enum.IntEnum):
    """Values equal the proto enum ``masterx.reasoning.v1.MasteryState``."""

    EFFORTLESS = 1
    FLUENT = 2
    RUSTY = 3
    PRACTICING = 4
    LEARNING = 5

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class SkillRecord:
    """What is stored per student and skill."""

    skill: str
    level: str  # learning | practicing | mastered
    last_practiced_at: float = 0.0  # unix seconds, 0 = unknown
    mastered_at: float = 0.0  # unix seconds, 0 = not mastered / unknown


@dataclass(frozen=True)
class RecencyRules:
    rusty_after_days: float = 14
    effortless_after_days: float = 30


def state_of(record: SkillRecord | None, now: float, rules: RecencyRules) -> MasteryState:
    """The single conversion point from a stored level to a state (seed 003's dbMasteryToState).

    No record -> learning. Mastered: not practised for more than ``rusty_after_days`` -> rusty;
    else mastered more than ``effortless_after_days`` ago -> effortless; else fluent. Unknown
    timestamps (0) do not trigger either rule.
    """
    if record is None or record.level == "learning":
        return MasteryState.LEARNING
    if record.level == "practicing":
        return MasteryState.PRACTICING
    if record.last_practiced_at > 0 and (now - record.last_practiced_at) / DAY > rules.rusty_after_days:
        return MasteryState.RUSTY
    if record.mastered_at > 0 and (now - record.mastered_at) / DAY > rules.effortless_after_days:
        return MasteryState.EFFORTLESS
    return MasteryState.FLUENT


@dataclass(frozen=True)
class SkillCost:
    skill: str
    state: MasteryState
    base_cost: float
    multiplier: float

    @property
    def effective_cost(self) -> float:
        return self.base_cost * self.multiplier


class CostCalculator:
    """Effective cost of each skill for one student at one moment; term cost = sum over its skills."""

    def __init__(
        self,
        records: Iterable[SkillRecord],
        now: float,
        *,
        base_costs: Mapping[str, float],
        multipliers: Mapping[str, float],
        rules: RecencyRules,
    ) -> None:
        by_skill = {r.skill: r for r in records}
        self.skills: dict[str, SkillCost] = {}
        for skill in sorted(SKILL_SET):
            state = state_of(by_skill.get(skill), now, rules)
            self.skills[skill] = SkillCost(
                skill, state, float(base_costs[category(skill)]), float(multipliers[state.label])
            )
        self._effective = {s: c.effective_cost for s, c in self.skills.items()}
        self._memo: dict[tuple[str, ...], float] = {}

    def term_cost(self, skills: tuple[str, ...]) -> float:
        cost = self._memo.get(skills)
        if cost is None:
            cost = sum(self._effective[s] for s in skills)
            self._memo[skills] = cost
        return cost

    def effective(self, skill: str) -> float:
        return self._effective[skill]


@dataclass(frozen=True)
class PracticeConfig:
    """The parsed ``practice.yaml``."""

    base_costs: Mapping[str, float]
    multipliers: Mapping[str, float]
    rules: RecencyRules
    bounds: Mapping[str, Mapping[str, tuple[float | None, float | None]]]
    session: Mapping[str, Any]
    extra_rods: int
    max_evaluations: int

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PracticeConfig:
        bounds = {
            purpose: {part: (spec.get("min"), spec.get("max")) for part, spec in parts.items()}
            for purpose, parts in data["bounds"].items()
        }
        recency = data.get("recency", {})
        gen = data.get("generator", {})
        return cls(
            base_costs={k: float(v) for k, v in data["base_costs"].items()},
            multipliers={k: float(v) for k, v in data["mastery_multipliers"].items()},
            rules=RecencyRules(
                float(recency.get("rusty_after_days", 14)), float(recency.get("effortless_after_days", 30))
            ),
            bounds=bounds,
            session=dict(data.get("session", {})),
            extra_rods=int(gen.get("extra_rods", 1)),
            max_evaluations=int(gen.get("max_candidate_evaluations", 20000)),
        )

    def calculator(self, records: Iterable[SkillRecord], now: float) -> CostCalculator:
        return CostCalculator(records, now, base_costs=self.base_costs, multipliers=self.multipliers, rules=self.rules)
