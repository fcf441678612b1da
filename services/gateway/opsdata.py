"""What the ops page shows, as plain data: rings of recent samples and pure shaping functions.

No I/O here. :mod:`services.gateway.routes_ops` fetches from the services and hands the
results to these functions; the tests call them directly.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ScoreSource(StrEnum):
    """Where the router's quality/speed/cost for a provider come from (``Candidate.score_source``)."""

    BENCHMARK = "benchmark"  # measured by a benchmark run (detail: the run id)
    PRIOR = "prior"  # the router's published prior for the model: never measured here, or too old
    CONFIG = "config"  # figures from the providers file
    DEFAULT = "default"  # nothing known: the router's defaults

    @classmethod
    def parse(cls, label: str) -> tuple[ScoreSource, str]:
        """``benchmark:<run>`` -> (BENCHMARK, "<run>"); an unknown kind counts as DEFAULT."""
        kind, _, detail = label.partition(":")
        try:
            return cls(kind), detail
        except ValueError:
            return cls.DEFAULT, label


@dataclass(frozen=True)
class ProviderSample:
    """One look at a provider's circuit breaker."""

    t: float
    breaker_state: str
    failure_rate: float
    window_calls: int


@dataclass
class ProviderHistory:
    """The last ``size`` breaker samples of every provider (the sampler adds one every few seconds)."""

    size: int
    samples: dict[str, deque[ProviderSample]] = field(default_factory=dict)

    def record(self, t: float, providers: Iterable[Mapping[str, Any]]) -> None:
        for p in providers:
            ring = self.samples.setdefault(str(p["name"]), deque(maxlen=self.size))
            ring.append(
                ProviderSample(
                    t=round(t, 3),
                    breaker_state=str(p.get("breaker_state", "")),
                    failure_rate=float(p.get("failure_rate", 0.0)),
                    window_calls=int(p.get("window_calls", 0)),
                )
            )

    def of(self, name: str) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.samples.get(name, ())]


@dataclass(frozen=True)
class DecisionRecord:
    """One routing decision the gateway saw (the router keeps none), with its reasons."""

    t: float
    request_id: str
    endpoint: str
    provider: str
    model: str
    category: str
    category_confidence: float
    reasons: tuple[str, ...]
    empathy_override: bool
    continuity: bool
    topic_changed: bool
    candidates: tuple[dict[str, Any], ...]
    total_ms: float
    cost_usd: float
    degraded: tuple[str, ...]


class DecisionLog:
    """The last N decisions, newest last; resizable (the gateway's settings decide N)."""

    def __init__(self, size: int = 50) -> None:
        self._ring: deque[DecisionRecord] = deque(maxlen=size)

    def resize(self, size: int) -> None:
        if size != self._ring.maxlen:
            self._ring = deque(self._ring, maxlen=size)

    def record(self, rec: DecisionRecord) -> None:
        self._ring.append(rec)

    def newest_first(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in reversed(self._ring)]

    def __len__(self) -> int:
        return len(self._ring)


#: The decisions this gateway process saw (both tutor chat endpoints record into it).
DECISIONS = DecisionLog()


def decision_record(
    summary: Mapping[str, Any], request_id: str, endpoint: str, t: float | None = None
) -> DecisionRecord:
    """Pure: a :class:`DecisionRecord` from a chat turn's final summary (``chat._summary``)."""
    p = summary.get("provider") or {}
    usage = summary.get("usage") or {}
    timings = summary.get("timings_ms") or {}
    return DecisionRecord(
        t=round(time.time() if t is None else t, 3),
        request_id=request_id,
        endpoint=endpoint,
        provider=str(p.get("name", "")),
        model=str(p.get("model", "")),
        category=str(p.get("category", "")),
        category_confidence=float(p.get("category_confidence", 0.0)),
        reasons=tuple(p.get("reasons", ())),
        empathy_override=bool(p.get("empathy_override", False)),
        continuity=bool(p.get("continuity", False)),
        topic_changed=bool(p.get("topic_changed", False)),
        candidates=tuple(
            {k: c.get(k) for k in ("provider", "score", "excluded", "reason", "score_source")}
            for c in p.get("candidates", ())
        ),
        total_ms=float(timings.get("total_ms", 0.0)),
        cost_usd=float(usage.get("cost_usd", 0.0)),
        degraded=tuple(str(d.get("service", "")) for d in summary.get("degraded", ())),
    )


def leaderboard(
    category: str,
    candidates: Sequence[Mapping[str, Any]],
    measured: Sequence[Mapping[str, Any]],
    weights: Mapping[str, float],
    now: float,
) -> dict[str, Any]:
    """Pure: one category's board as the router ranks it, with each score's source and age.

    ``candidates`` are the router's (Route with this category: quality/speed/cost/score and
    ``score_source``); ``measured`` the benchmark leaderboard's scores of the category (when and
    from which run). Best first by the router's score.
    """
    by_provider = {str(m["provider"]): m for m in measured}
    rows: list[dict[str, Any]] = []
    for c in candidates:
        name = str(c["provider"])
        m = by_provider.get(name)
        source, detail = ScoreSource.parse(str(c.get("score_source", "")))
        measured_at = float(m["measured_at"]) if m and m.get("measured_at") else 0.0
        rows.append(
            {
                "provider": name,
                "model": str(c.get("model", "")),
                "quality": float(c.get("quality", 0.0)),
                "speed": float(c.get("speed", 0.0)),
                "cost": float(c.get("cost", 0.0)),
                "score": float(c.get("score", 0.0)),
                "source": source.value,
                "source_detail": detail,
                "measured_at": measured_at,
                "age_seconds": round(max(0.0, now - measured_at), 1) if measured_at else None,
                "run_id": str(m.get("run_id", "")) if m else "",
                "items": int(m.get("items", 0)) if m else 0,
                "breaker_state": str(c.get("breaker_state", "")),
                "excluded": bool(c.get("excluded", False)),
                "reason": str(c.get("reason", "")),
            }
        )
    rows.sort(key=lambda r: (-r["score"], r["provider"]))
    return {"category": category, "weights": dict(weights), "rows": rows}


def day_range(today: dt.date, days: int) -> list[str]:
    """Pure: the ``days`` UTC days ending today, oldest first, as YYYY-MM-DD."""
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def spend(
    rows: Iterable[Mapping[str, Any]],
    days: Sequence[str],
    budgets: Mapping[str, float],
) -> dict[str, Any]:
    """Pure: cost-ledger rows (day, user, provider) summed per day and provider, with budgets.

    ``series[provider][i]`` is the spend on ``days[i]``; ``today`` is the last day's spend per
    provider next to its daily budget (0 = unlimited) and the share of it used.
    """
    index = {d: i for i, d in enumerate(days)}
    providers = sorted(set(budgets) | {str(r["provider"]) for r in rows if str(r.get("day", "")) in index})
    series = {p: [0.0] * len(days) for p in providers}
    requests = {p: 0 for p in providers}
    for r in rows:
        i = index.get(str(r.get("day", "")))
        if i is None:
            continue
        name = str(r["provider"])
        series[name][i] += float(r.get("cost_usd", 0.0))
        requests[name] += int(r.get("requests", 0))
    series = {p: [round(v, 8) for v in vals] for p, vals in series.items()}
    per_day = [round(sum(series[p][i] for p in providers), 8) for i in range(len(days))]
    today = []
    for p in providers:
        spent = series[p][-1] if days else 0.0
        budget = float(budgets.get(p, 0.0))
        used = spent / budget if budget > 0 else None
        today.append(
            {
                "provider": p,
                "spent_usd": spent,
                "budget_usd": budget,
                "used": None if used is None or math.isnan(used) else round(used, 4),
            }
        )
    return {
        "days": list(days),
        "providers": providers,
        "series": series,
        "per_day": per_day,
        "requests": requests,
        "total_usd": round(sum(per_day), 8),
        "today": today,
    }


def recent_runs(statuses: Iterable[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Pure: benchmark runs newest first (by start), each with its progress as a fraction."""
    out = []
    for s in statuses:
        total = int(s.get("total_items", 0))
        done = int(s.get("completed_items", 0)) + int(s.get("skipped_items", 0))
        out.append({**s, "progress": round(done / total, 4) if total else 0.0})
    out.sort(key=lambda s: -float(s.get("started_at", 0.0)))
    return out[:limit]
