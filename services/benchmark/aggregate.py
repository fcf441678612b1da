"""From item results to per-provider, per-category quality / speed / cost / final scores.

* quality: mean item quality, failed items counting 0 (errors are part of quality).
* speed: from the median latency of the successful items. ``reference`` (the default): 100 at
  or below the fast reference, 0 at or above the slow one, log-linear in between -- an absolute
  scale, so scores of different runs (and of providers measured in different runs) compare.
  ``relative``: 100 x fastest median / this median among the providers of the run in that
  category (only comparable within one run).
* cost: from the mean cost per successful item. ``reference``: log-linear between the cheap and
  expensive references. ``relative``: 100 x (cheapest + 1e-7) / (this + 1e-7) (the small floor
  keeps free providers at 100 without dividing by zero).
* A provider with no successful item gets speed 0 and cost 0: failing fast and free is not a merit.
* final = w_quality x quality + w_speed x speed + w_cost x cost, with the suite's weights.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.benchmark.suite import Weights

COST_FLOOR_USD = 1e-7


@dataclass(frozen=True)
class ScoreRefs:
    mode: str = "reference"
    fast_ms: float = 500.0
    slow_ms: float = 30000.0
    cheap_usd: float = 0.00001
    expensive_usd: float = 0.02


@dataclass
class _Bucket:
    qualities: list[float]
    latencies: list[float]
    costs: list[float]
    errors: int
    models: Counter[str]


def _log_scale(value: float, best: float, worst: float) -> float:
    """100 at or below ``best``, 0 at or above ``worst``, linear in log(value) in between."""
    if value <= best:
        return 100.0
    if value >= worst:
        return 0.0
    return 100.0 * (math.log(worst) - math.log(value)) / (math.log(worst) - math.log(best))


def aggregate(
    items: Iterable[Mapping[str, Any]],
    weights: Mapping[str, Weights],
    refs: ScoreRefs,
    *,
    run_id: str,
    measured_at: float,
    trigger: str = "",
) -> list[dict[str, Any]]:
    """Score documents (one per provider and category present in ``items``)."""
    buckets: dict[tuple[str, str], _Bucket] = defaultdict(lambda: _Bucket([], [], [], 0, Counter()))
    for item in items:
        bucket = buckets[(item["category"], item["provider"])]
        bucket.qualities.append(float(item["quality"]))
        if item.get("error"):
            bucket.errors += 1
            continue
        bucket.latencies.append(float(item["latency_ms"]))
        bucket.costs.append(float(item["cost_usd"]))
        if item.get("model"):
            bucket.models[item["model"]] += 1

    medians = {key: statistics.median(b.latencies) for key, b in buckets.items() if b.latencies}
    mean_costs = {key: statistics.fmean(b.costs) for key, b in buckets.items() if b.costs}
    out: list[dict[str, Any]] = []
    for (category, provider), bucket in sorted(buckets.items()):
        key = (category, provider)
        peers = [k for k in medians if k[0] == category]
        if key in medians:
            p50 = medians[key]
            cost = mean_costs[key]
            if refs.mode == "reference":
                speed = _log_scale(max(p50, 1e-3), refs.fast_ms, refs.slow_ms)
                cost_score = _log_scale(max(cost, 1e-12), refs.cheap_usd, refs.expensive_usd)
            else:
                fastest = min(medians[k] for k in peers)
                cheapest = min(mean_costs[k] for k in peers)
                speed = 100.0 * max(fastest, 1e-3) / max(p50, 1e-3)
                cost_score = 100.0 * (cheapest + COST_FLOOR_USD) / (cost + COST_FLOOR_USD)
        else:
            p50, cost, speed, cost_score = 0.0, 0.0, 0.0, 0.0
        quality = statistics.fmean(bucket.qualities) if bucket.qualities else 0.0
        w = weights[category]
        final = w.quality * quality + w.speed * speed + w.cost * cost_score
        out.append(
            {
                "run_id": run_id,
                "provider": provider,
                "model": bucket.models.most_common(1)[0][0] if bucket.models else "",
                "category": category,
                "quality": round(quality, 3),
                "speed": round(speed, 3),
                "cost": round(cost_score, 3),
                "final_score": round(final, 3),
                "items": len(bucket.qualities),
                "errors": bucket.errors,
                "p50_latency_ms": round(p50, 3),
                "mean_cost_usd": cost,
                "measured_at": measured_at,
                "weights": {"quality": w.quality, "speed": w.speed, "cost": w.cost},
                "score_mode": refs.mode,
                "trigger": trigger,
            }
        )
    return out
