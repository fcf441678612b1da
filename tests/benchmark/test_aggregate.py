"""Per-provider quality, speed, cost and final scores from item results."""

from __future__ import annotations

import pytest

from services.benchmark.aggregate import ScoreRefs, aggregate
from services.benchmark.suite import Weights

WEIGHTS = {"coding": Weights(0.5, 0.3, 0.2)}


def _item(provider: str, quality: float, latency: float, cost: float, error: str = "") -> dict[str, object]:
    return {
        "provider": provider,
        "category": "coding",
        "quality": quality,
        "latency_ms": latency,
        "cost_usd": cost,
        "error": error,
        "model": f"{provider}-m",
    }


def _by_provider(items: list[dict[str, object]], refs: ScoreRefs) -> dict[str, dict[str, object]]:
    return {d["provider"]: d for d in aggregate(items, WEIGHTS, refs, run_id="r", measured_at=1.0)}  # type: ignore[misc]


def test_relative_scores_put_the_fastest_and_cheapest_at_100() -> None:
    items = [
        _item("fast", 80, 100, 0.001),
        _item("fast", 60, 300, 0.001),
        _item("slow", 100, 800, 0.004),
        _item("slow", 100, 800, 0.004),
        _item("flaky", 100, 200, 0.002),
        _item("flaky", 0, 50, 0.0, error="UNAVAILABLE: boom"),
    ]
    scores = _by_provider(items, ScoreRefs(mode="relative"))
    fast, slow, flaky = scores["fast"], scores["slow"], scores["flaky"]
    assert fast["quality"] == 70.0 and slow["quality"] == 100.0 and flaky["quality"] == 50.0
    assert fast["p50_latency_ms"] == 200.0 and flaky["p50_latency_ms"] == 200.0  # failed items' latency ignored
    assert fast["speed"] == 100.0 and slow["speed"] == 25.0
    assert fast["cost"] == pytest.approx(100.0) and slow["cost"] == pytest.approx(25.0, rel=1e-3)
    assert flaky["errors"] == 1 and flaky["items"] == 2
    assert fast["final_score"] == pytest.approx(0.5 * 70 + 0.3 * 100 + 0.2 * 100)
    assert slow["final_score"] == pytest.approx(0.5 * 100 + 0.3 * 25 + 0.2 * slow["cost"], abs=0.01)  # type: ignore[operator]
    assert fast["model"] == "fast-m"


def test_a_provider_that_never_answers_scores_zero_everywhere() -> None:
    items = [_item("down", 0, 5, 0.0, error="UNAVAILABLE"), _item("up", 50, 100, 0.0)]
    scores = _by_provider(items, ScoreRefs(mode="relative"))
    assert (scores["down"]["speed"], scores["down"]["cost"], scores["down"]["final_score"]) == (0.0, 0.0, 0.0)
    assert scores["up"]["cost"] == 100.0  # free and answering


def test_reference_mode_is_absolute_and_log_scaled() -> None:
    refs = ScoreRefs(mode="reference", fast_ms=100, slow_ms=10000, cheap_usd=1e-5, expensive_usd=1e-1)
    scores = _by_provider([_item("a", 100, 50, 1e-6), _item("b", 100, 1000, 1e-3), _item("c", 100, 20000, 1.0)], refs)
    assert scores["a"]["speed"] == 100.0 and scores["a"]["cost"] == 100.0
    assert scores["b"]["speed"] == pytest.approx(50.0) and scores["b"]["cost"] == pytest.approx(50.0)
    assert scores["c"]["speed"] == 0.0 and scores["c"]["cost"] == 0.0
    alone = _by_provider([_item("b", 100, 1000, 1e-3)], refs)
    assert alone["b"]["speed"] == pytest.approx(50.0)  # not 100 just because it ran alone


def test_reference_is_the_default_mode() -> None:
    assert ScoreRefs().mode == "reference"
    scores = _by_provider([_item("a", 100, 50, 1e-6), _item("b", 100, 60000, 1.0)], ScoreRefs())
    assert (scores["a"]["speed"], scores["a"]["cost"]) == (100.0, 100.0)
    assert (scores["b"]["speed"], scores["b"]["cost"]) == (0.0, 0.0)
    assert scores["a"]["score_mode"] == "reference"
