"""Routing evaluation from recorded per-item outcomes: policies, quality retained, cost saved, APGR.

Pure functions (no I/O besides the CSV reader/writer); ``bench/bench_routing_policy.py`` feeds
them with the router's dry-run decisions.

Outcomes CSV (header row required, columns in any order, extra columns ignored)::

    prompt      the user message, exactly as the router sees it           (required)
    provider    provider name as the router names it                      (required)
    correct     quality of the answer in [0, 1]: 1 = correct, 0 = wrong   (required)
    cost        what the answer cost, US dollars                          (required)
    latency     latency of the answer, milliseconds                       (required)
    category    coding|math|research|language|empathy|general (empty = the router classifies)
    difficulty  easy|medium|hard (reporting; optional complexity source)
    item_id     a stable id of the prompt (empty = the prompt text is the id)

Every prompt needs one row per provider (a complete matrix), so every policy can be scored on
every prompt.

Metrics, relative to the *strongest* single provider (highest mean quality, the dearer on a
tie) and the *cheapest* one (lowest total cost):

* quality = mean ``correct`` over prompts; ``retained = quality / quality(strongest)``;
* ``cost_saved = 1 - cost / cost(strongest)``;
* PGR (performance gap recovered, RouteLLM) = (quality - quality(cheapest)) /
  (quality(strongest) - quality(cheapest));
* cost position c = (cost - cost(cheapest)) / (cost(strongest) - cost(cheapest));
* APGR = area under PGR over c in [0, 1] (trapezoids through the policy's points, anchored at
  always-cheapest (0, 0) and always-strongest (1, 1); points outside [0, 1] are clipped). A
  router that mixes the two at random scores 0.5; one that recovers the whole gap at the
  cheapest cost scores about 1.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("prompt", "provider", "correct", "cost", "latency")
OPTIONAL_COLUMNS = ("category", "difficulty", "item_id")
CATEGORIES = ("coding", "math", "research", "language", "empathy", "general")
DIFFICULTIES = ("easy", "medium", "hard")


class OutcomeError(ValueError):
    """The outcomes file is invalid; the message names the row and the column."""


@dataclass(frozen=True)
class Outcome:
    """How one provider did on one prompt."""

    prompt: str
    provider: str
    correct: float
    cost: float
    latency_ms: float
    category: str = ""
    difficulty: str = ""
    item_id: str = ""

    @property
    def key(self) -> str:
        return self.item_id or self.prompt


def _number(raw: str, where: str, column: str, *, low: float, high: float = math.inf) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise OutcomeError(f"{where}: {column} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        bounds = f"[{low:g}, {high:g}]" if high != math.inf else f">= {low:g}"
        raise OutcomeError(f"{where}: {column} must be {bounds}, got {value:g}")
    return value


def parse_outcomes(rows: Iterable[Mapping[str, str]], source: str = "outcomes") -> list[Outcome]:
    out: list[Outcome] = []
    for index, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{source} row {index}"
        missing = [c for c in REQUIRED_COLUMNS if not (row.get(c) or "").strip()]
        if missing:
            raise OutcomeError(f"{where}: missing {', '.join(missing)}")
        category = (row.get("category") or "").strip().lower()
        if category and category not in CATEGORIES:
            raise OutcomeError(f"{where}: category must be one of {', '.join(CATEGORIES)}, got {category!r}")
        difficulty = (row.get("difficulty") or "").strip().lower()
        if difficulty and difficulty not in DIFFICULTIES:
            raise OutcomeError(f"{where}: difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
        out.append(
            Outcome(
                prompt=row["prompt"].strip(),
                provider=row["provider"].strip(),
                correct=_number(row["correct"], where, "correct", low=0.0, high=1.0),
                cost=_number(row["cost"], where, "cost", low=0.0),
                latency_ms=_number(row["latency"], where, "latency", low=0.0),
                category=category,
                difficulty=difficulty,
                item_id=(row.get("item_id") or "").strip(),
            )
        )
    return out


def read_outcomes(path: Path) -> list[Outcome]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise OutcomeError(f"{path.name}: header lacks {', '.join(absent)}")
        return parse_outcomes(reader, path.name)


def write_outcomes(path: Path, outcomes: Iterable[Outcome]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
        for o in outcomes:
            writer.writerow(
                [
                    o.prompt,
                    o.provider,
                    f"{o.correct:g}",
                    f"{o.cost:.9g}",
                    f"{o.latency_ms:.3f}",
                    o.category,
                    o.difficulty,
                    o.item_id,
                ]
            )


@dataclass(frozen=True)
class Table:
    """Outcomes as a complete prompt x provider matrix."""

    keys: tuple[str, ...]
    providers: tuple[str, ...]
    cells: Mapping[tuple[str, str], Outcome]

    def first(self, key: str) -> Outcome:
        return self.cells[(key, self.providers[0])]


def table(outcomes: Sequence[Outcome]) -> Table:
    cells: dict[tuple[str, str], Outcome] = {}
    keys: dict[str, None] = {}
    providers: dict[str, None] = {}
    for o in outcomes:
        if (o.key, o.provider) in cells:
            raise OutcomeError(f"two rows for prompt {o.key!r} and provider {o.provider!r}")
        cells[(o.key, o.provider)] = o
        keys.setdefault(o.key)
        providers.setdefault(o.provider)
    if len(providers) < 2:
        raise OutcomeError(f"routing needs at least two providers, the outcomes have {len(providers)}")
    missing = [(k, p) for k in keys for p in providers if (k, p) not in cells]
    if missing:
        k, p = missing[0]
        raise OutcomeError(f"{len(missing)} prompt/provider pair(s) without a row, e.g. {k!r} / {p!r}")
    return Table(tuple(keys), tuple(sorted(providers)), cells)


@dataclass(frozen=True)
class PolicyResult:
    name: str
    knob: float | None
    quality: float
    cost: float
    mean_latency_ms: float
    picks: Mapping[str, float]  # provider -> share of prompts
    #: difficulty -> share of its prompts routed to the strongest provider
    strong_share_by_difficulty: Mapping[str, float]


def evaluate(t: Table, choice: Mapping[str, Mapping[str, float]], name: str, knob: float | None = None) -> PolicyResult:
    """Score a (possibly randomised) policy: ``choice[key]`` = provider -> probability."""
    quality = cost = latency = 0.0
    picks: dict[str, float] = dict.fromkeys(t.providers, 0.0)
    strong = strongest(t)
    per_diff: dict[str, list[float]] = {}
    for key in t.keys:
        probs = choice[key]
        unknown = set(probs) - set(t.providers)
        if unknown:
            raise OutcomeError(f"policy {name} chose unknown provider(s) {sorted(unknown)} for {key!r}")
        for provider, p in probs.items():
            o = t.cells[(key, provider)]
            quality += p * o.correct
            cost += p * o.cost
            latency += p * o.latency_ms
            picks[provider] += p
        per_diff.setdefault(t.first(key).difficulty or "unlabelled", []).append(probs.get(strong, 0.0))
    n = len(t.keys)
    return PolicyResult(
        name,
        knob,
        quality / n,
        cost,
        latency / n,
        {p: picks[p] / n for p in t.providers},
        {d: sum(v) / len(v) for d, v in sorted(per_diff.items())},
    )


def single(t: Table, provider: str) -> dict[str, dict[str, float]]:
    return {k: {provider: 1.0} for k in t.keys}


def strongest(t: Table) -> str:
    """Highest mean quality; on a tie the dearer provider."""

    def rank(p: str) -> tuple[float, float]:
        return (sum(t.cells[(k, p)].correct for k in t.keys), sum(t.cells[(k, p)].cost for k in t.keys))

    return max(t.providers, key=rank)


def cheapest(t: Table) -> str:
    """Lowest total cost; on a tie the better provider."""
    return min(
        t.providers,
        key=lambda p: (sum(t.cells[(k, p)].cost for k in t.keys), -sum(t.cells[(k, p)].correct for k in t.keys)),
    )


def oracle(t: Table) -> dict[str, dict[str, float]]:
    """Per prompt the cheapest of the providers with the best quality on it (the upper bound)."""
    out = {}
    for key in t.keys:
        best = max(t.cells[(key, p)].correct for p in t.providers)
        pick = min((p for p in t.providers if t.cells[(key, p)].correct == best), key=lambda p: t.cells[(key, p)].cost)
        out[key] = {pick: 1.0}
    return out


def uniform_random(t: Table) -> dict[str, dict[str, float]]:
    """Every provider with equal probability (expected values, no sampling noise)."""
    share = 1.0 / len(t.providers)
    return {k: dict.fromkeys(t.providers, share) for k in t.keys}


def random_mix(t: Table, p_strong: float) -> dict[str, dict[str, float]]:
    """Strongest with probability ``p_strong``, else the cheapest (RouteLLM's random router)."""
    strong, weak = strongest(t), cheapest(t)
    return {k: {strong: p_strong, weak: 1.0 - p_strong} if strong != weak else {strong: 1.0} for k in t.keys}


def sampled_random(t: Table, seed: int) -> dict[str, dict[str, float]]:
    """One uniformly random provider per prompt (a sampled run, for comparison with the expectation)."""
    rng = random.Random(seed)
    return {k: {rng.choice(t.providers): 1.0} for k in t.keys}


@dataclass(frozen=True)
class Relative:
    retained: float
    cost_saved: float
    pgr: float
    cost_position: float


def relative(r: PolicyResult, strong: PolicyResult, weak: PolicyResult) -> Relative:
    gap = strong.quality - weak.quality
    span = strong.cost - weak.cost
    return Relative(
        retained=r.quality / strong.quality if strong.quality else math.nan,
        cost_saved=1.0 - r.cost / strong.cost if strong.cost else math.nan,
        pgr=(r.quality - weak.quality) / gap if gap else math.nan,
        cost_position=(r.cost - weak.cost) / span if span else math.nan,
    )


def apgr(points: Iterable[Relative]) -> float:
    """Area under PGR over the cost position, anchored at (0, 0) and (1, 1); see the module doc."""
    pts = sorted({(min(1.0, max(0.0, p.cost_position)), p.pgr) for p in points if not math.isnan(p.pgr)})
    pts = [(0.0, 0.0), *pts, (1.0, 1.0)]
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(pts))


def best_saving(points: Iterable[tuple[float, Relative]], min_retained: float) -> tuple[float, Relative] | None:
    """The knob with the largest cost saving whose quality retained is at least ``min_retained``."""
    ok = [(k, r) for k, r in points if r.retained >= min_retained]
    return max(ok, key=lambda kr: kr[1].cost_saved) if ok else None
