"""Soroban problem generator that keeps every term within the student's complexity budget.

For each position the generator walks the candidate terms in a seeded order, asks the soroban
model which skills each needs, prices them with the student's :class:`CostCalculator` and keeps
only terms with ``min <= cost <= max``. A depth-first search with memoised dead ends backs out
of totals that lead nowhere; a hard cap on candidate evaluations turns any hopeless search
into FAILED_PRECONDITION. Bounds that no term can meet are refused up front from a catalogue of
every skill combination a term can need (exact for 1-2 digit terms, a cost ceiling for 3).

The starting number is entered on a cleared soroban (direct moves only, cost 0), so the bounds
apply from the second term on; it is still part of the trace.
"""

from __future__ import annotations

import math
import random
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from masterx_runtime.errors import FailedPrecondition, InvalidArgument
from services.reasoning.practice.mastery import CostCalculator, PracticeConfig, SkillCost
from services.reasoning.practice.soroban import SKILL_SET, analyse, category

MAX_TERMS = 12
MAX_DIGITS = 3


@dataclass(frozen=True)
class Bounds:
    min: float | None = None
    max: float | None = None

    def describe(self) -> str:
        lo = "-" if self.min is None else f"{self.min:g}"
        hi = "-" if self.max is None else f"{self.max:g}"
        return f"[min {lo}, max {hi}]"


@dataclass(frozen=True)
class ProblemSpec:
    terms: int = 4
    digits: int = 1
    bounds: Bounds = Bounds()
    allowed_skills: frozenset[str] | None = None  # None = every skill
    allow_subtraction: bool = False
    seed: int = 0
    purpose: str = "focus"
    part_type: str = "abacus"


@dataclass(frozen=True)
class TraceStep:
    term: int
    total_before: int
    total_after: int
    skills: tuple[str, ...]
    cost: float


@dataclass
class Trace:
    steps: list[TraceStep]
    bounds: Bounds
    skill_context: list[SkillCost]
    purpose: str
    part_type: str
    rejected_over_max: int = 0
    rejected_under_min: int = 0

    @property
    def total_cost(self) -> float:
        return sum(s.cost for s in self.steps)


@dataclass
class Problem:
    terms: list[int]
    answer: int
    trace: Trace = field(repr=False)


def validate(spec: ProblemSpec) -> None:
    if not 2 <= spec.terms <= MAX_TERMS:
        raise InvalidArgument(f"terms must be 2-{MAX_TERMS}, got {spec.terms}", reason="BAD_TERMS", field="terms")
    if not 1 <= spec.digits <= MAX_DIGITS:
        raise InvalidArgument(f"digits must be 1-{MAX_DIGITS}, got {spec.digits}", reason="BAD_DIGITS", field="digits")
    for name, value in (("min", spec.bounds.min), ("max", spec.bounds.max)):
        if value is not None and (value < 0 or not math.isfinite(value)):
            raise InvalidArgument(
                f"bounds.{name} must be a finite number >= 0", reason="BAD_BOUNDS", field=f"bounds.{name}"
            )
    if spec.allowed_skills is not None:
        unknown = sorted(spec.allowed_skills - SKILL_SET)
        if unknown:
            raise InvalidArgument(
                f"unknown skills: {', '.join(unknown[:5])}", reason="UNKNOWN_SKILL", field="allowed_skills"
            )
    b = spec.bounds
    if b.min is not None and b.max is not None and b.min > b.max:
        raise FailedPrecondition(
            f"impossible bounds: min {b.min:g} > max {b.max:g}", reason="IMPOSSIBLE_BOUNDS", field="bounds"
        )


def _allowed(skills: tuple[str, ...], allowed: frozenset[str] | None) -> bool:
    """Direct moves are always allowed; techniques only when listed."""
    return allowed is None or all(s in allowed or s.startswith("basic.") for s in skills)


class MoveTable:
    """The skills of every move of a terms-of-up-to-``digits``-digits problem, precomputed.

    Rows are totals (``digits + extra_rods`` rods), entries index into the distinct skill tuples:
    one list lookup replaces a soroban simulation in the generator's inner loop. Exhaustive: 1.8k
    moves for 1 digit, 200k for 2 (one to two seconds, once per process, done at start-up).
    """

    def __init__(self, digits: int, extra_rods: int) -> None:
        self.max_term = 10**digits - 1
        self.max_total = 10 ** (digits + extra_rods) - 1
        self.tuples: list[tuple[str, ...]] = []
        index: dict[tuple[str, ...], int] = {}

        def intern(skills: tuple[str, ...]) -> int:
            i = index.get(skills)
            if i is None:
                i = index[skills] = len(self.tuples)
                self.tuples.append(skills)
            return i

        raw = analyse.__wrapped__  # type: ignore[attr-defined]
        self.add: list[array[int]] = []
        self.sub: list[array[int]] = []
        for total in range(self.max_total + 1):
            n_add = min(self.max_term, self.max_total - total)
            self.add.append(array("H", (intern(raw(total, t)) for t in range(1, n_add + 1))))
            n_sub = min(self.max_term, total)
            self.sub.append(array("H", (intern(raw(total, -t)) for t in range(1, n_sub + 1))))

    def skills(self, total: int, term: int) -> tuple[str, ...]:
        row = self.add[total] if term > 0 else self.sub[total]
        return self.tuples[row[abs(term) - 1]]

    def catalog(self, subtraction: bool) -> frozenset[tuple[str, ...]]:
        """Every distinct (sorted) skill combination a term can need."""
        ids: set[int] = set()
        for row in self.add:
            ids.update(row)
        if subtraction:
            for row in self.sub:
                ids.update(row)
        return frozenset(tuple(sorted(self.tuples[i])) for i in ids)


_table_lock = threading.Lock()
TABLE_MAX_DIGITS = 2


@lru_cache(maxsize=8)
def _table(digits: int, extra_rods: int) -> MoveTable:
    return MoveTable(digits, extra_rods)


def move_table(digits: int, extra_rods: int) -> MoveTable | None:
    """The precomputed table for 1-2 digit terms (None for 3 digits: analysed on demand)."""
    if digits > TABLE_MAX_DIGITS:
        return None
    with _table_lock:
        return _table(digits, extra_rods)


@lru_cache(maxsize=16)
def skill_catalog(digits: int, subtraction: bool, extra_rods: int) -> frozenset[tuple[str, ...]]:
    table = move_table(digits, extra_rods)
    if table is None:
        raise ValueError("no exhaustive catalogue for 3-digit terms")
    return table.catalog(subtraction)


SKILL_ORDER: tuple[str, ...] = tuple(sorted(SKILL_SET))
_SKILL_COLUMN = {s: i for i, s in enumerate(SKILL_ORDER)}


@lru_cache(maxsize=16)
def catalog_matrix(digits: int, subtraction: bool, extra_rods: int) -> np.ndarray:
    """Skill counts per catalogue entry (rows) and skill (columns, :data:`SKILL_ORDER`):
    all term costs for a student are one matrix-vector product."""
    combos = sorted(skill_catalog(digits, subtraction, extra_rods))
    matrix = np.zeros((len(combos), len(SKILL_ORDER)))
    for row, combo in enumerate(combos):
        for skill in combo:
            matrix[row, _SKILL_COLUMN[skill]] += 1
    return matrix


def warm_tables(extra_rods: int) -> None:
    """Build the move tables and catalogues ahead of the first request."""
    for digits in range(1, TABLE_MAX_DIGITS + 1):
        for subtraction in (False, True):
            catalog_matrix(digits, subtraction, extra_rods)


def _check_feasible(spec: ProblemSpec, calc: CostCalculator, extra_rods: int) -> None:
    b = spec.bounds
    if b.min is None and b.max is None:
        return
    within = lambda cost: (b.min is None or cost >= b.min) and (b.max is None or cost <= b.max)  # noqa: E731
    if spec.digits <= TABLE_MAX_DIGITS:
        matrix = catalog_matrix(spec.digits, spec.allow_subtraction, extra_rods)
        all_costs = matrix @ np.array([calc.effective(sk) for sk in SKILL_ORDER])
        if spec.allowed_skills is not None:
            banned = [i for i, sk in enumerate(SKILL_ORDER) if not _allowed((sk,), spec.allowed_skills)]
            all_costs = all_costs[matrix[:, banned].sum(axis=1) == 0]
        costs = [float(c) for c in np.unique(np.round(all_costs, 9))]
        if not any(within(c) for c in costs):
            shown = ", ".join(f"{c:g}" for c in costs[:12]) + (" ..." if len(costs) > 12 else "")
            raise FailedPrecondition(
                f"impossible bounds {b.describe()}: no {spec.digits}-digit term can cost that for this student "
                f"(possible term costs: {shown})",
                reason="IMPOSSIBLE_BOUNDS",
                field="bounds",
            )
        return
    if b.min is not None:

        def top(prefix: str) -> float:
            return max(
                (
                    calc.effective(s)
                    for s in SKILL_SET
                    if category(s).startswith(prefix) and _allowed((s,), spec.allowed_skills)
                ),
                default=0.0,
            )

        ceiling = spec.digits * (top("tenComplements") + 2 * top("fiveComplements") + top("advanced"))
        if b.min > ceiling:
            raise FailedPrecondition(
                f"impossible bounds {b.describe()}: no {spec.digits}-digit term can cost more than {ceiling:g} for this student",
                reason="IMPOSSIBLE_BOUNDS",
                field="bounds",
            )


def _stride(rng: random.Random, n: int) -> int:
    """A step coprime with ``n``: (offset + k * stride) % n visits every candidate once."""
    if n <= 2:
        return 1
    while True:
        s = rng.randrange(1, n)
        if math.gcd(s, n) == 1:
            return s


class _OutOfBudget(Exception):
    pass


def generate(spec: ProblemSpec, calc: CostCalculator, cfg: PracticeConfig) -> Problem:
    """A problem whose every term after the first costs within ``spec.bounds`` for this student."""
    validate(spec)
    _check_feasible(spec, calc, cfg.extra_rods)
    rng = random.Random(spec.seed)
    max_term = 10**spec.digits - 1
    max_total = 10 ** (spec.digits + cfg.extra_rods) - 1
    lo, hi = spec.bounds.min, spec.bounds.max
    allowed = spec.allowed_skills
    table = move_table(spec.digits, cfg.extra_rods)
    skills_of = table.skills if table is not None else analyse
    dead: set[tuple[int, int]] = set()
    counters = {"evaluations": 0, "over": 0, "under": 0}
    budget = cfg.max_evaluations

    def extend(total: int, remaining: int) -> list[TraceStep] | None:
        if remaining == 0:
            return []
        if (remaining, total) in dead:
            return None
        n_add = min(max_term, max_total - total)
        n_sub = min(max_term, total) if spec.allow_subtraction else 0
        n = n_add + n_sub
        if n > 0:
            offset, stride = rng.randrange(n), _stride(rng, n)
            for k in range(n):
                counters["evaluations"] += 1
                if counters["evaluations"] > budget:
                    raise _OutOfBudget
                idx = (offset + k * stride) % n
                term = idx + 1 if idx < n_add else n_add - idx - 1
                skills = skills_of(total, term)
                if allowed is not None and not _allowed(skills, allowed):
                    continue
                cost = calc.term_cost(skills)
                if hi is not None and cost > hi:
                    counters["over"] += 1
                    continue
                if lo is not None and cost < lo:
                    counters["under"] += 1
                    continue
                rest = extend(total + term, remaining - 1)
                if rest is not None:
                    return [TraceStep(term, total, total + term, skills, cost), *rest]
        dead.add((remaining, total))
        return None

    starts = list(range(1, max_term + 1))
    rng.shuffle(starts)
    steps: list[TraceStep] | None = None
    try:
        for start in starts:
            rest = extend(start, spec.terms - 1)
            if rest is not None:
                skills = analyse(0, start)
                steps = [TraceStep(start, 0, start, skills, calc.term_cost(skills)), *rest]
                break
    except _OutOfBudget:
        steps = None
    if steps is None:
        raise FailedPrecondition(
            f"no {spec.terms}-term problem fits bounds {spec.bounds.describe()} for this student "
            f"(gave up after {min(counters['evaluations'], budget)} candidate terms; "
            f"{counters['over']} over max, {counters['under']} under min): widen the bounds or allow more skills",
            reason="IMPOSSIBLE_BOUNDS",
            field="bounds",
        )
    trace = Trace(
        steps=steps,
        bounds=spec.bounds,
        skill_context=_context(calc, (s for step in steps for s in step.skills)),
        purpose=spec.purpose,
        part_type=spec.part_type,
        rejected_over_max=counters["over"],
        rejected_under_min=counters["under"],
    )
    return Problem([s.term for s in steps], steps[-1].total_after, trace)


def _context(calc: CostCalculator, skills: Iterable[str]) -> list[SkillCost]:
    seen: dict[str, SkillCost] = {}
    for s in skills:
        if s not in seen:
            seen[s] = calc.skills[s]
    return list(seen.values())
