"""MongoDB documents <-> protobuf messages of the benchmark API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from masterx.benchmark.v1 import benchmark_pb2
from masterx.common.v1 import common_pb2
from services.benchmark.suite import CATEGORY_BY_NAME, Suite, Weights


def category_value(name: str) -> int:
    return CATEGORY_BY_NAME.get(name, common_pb2.CATEGORY_UNSPECIFIED)


def run_status(doc: Mapping[str, Any], *, completed_at_least: int = 0) -> benchmark_pb2.RunStatus:
    return benchmark_pb2.RunStatus(
        run_id=doc["_id"],
        state=benchmark_pb2.RunState.Value(f"RUN_STATE_{doc['state']}"),
        categories=[category_value(c) for c in doc.get("categories", [])],  # type: ignore[misc]
        providers=list(doc.get("providers", [])),
        completed_items=max(int(doc.get("completed_items", 0)), completed_at_least),
        total_items=int(doc.get("total_items", 0)),
        started_at=float(doc.get("started_at", 0.0)),
        finished_at=float(doc.get("finished_at", 0.0)),
        error=str(doc.get("error", "")),
        trigger=str(doc.get("trigger", "")),
        cost_usd=float(doc.get("cost_usd", 0.0)),
        max_cost_usd=float(doc.get("max_cost_usd", 0.0)),
        skipped_items=int(doc.get("skipped_items", 0)),
    )


def item_result(doc: Mapping[str, Any]) -> benchmark_pb2.ItemResult:
    tokens = doc.get("tokens", {})
    return benchmark_pb2.ItemResult(
        run_id=doc["run_id"],
        provider=doc["provider"],
        category=category_value(doc["category"]),  # type: ignore[arg-type]
        item_id=doc["item_id"],
        quality=float(doc["quality"]),
        latency_ms=float(doc["latency_ms"]),
        ttft_ms=float(doc["ttft_ms"]),
        tokens=common_pb2.TokenUsage(
            input_tokens=int(tokens.get("input", 0)),
            output_tokens=int(tokens.get("output", 0)),
            total_tokens=int(tokens.get("total", 0)),
            estimated=bool(tokens.get("estimated", False)),
        ),
        cost_usd=float(doc["cost_usd"]),
        scorer=str(doc["scorer"]),
        evidence=[str(e) for e in doc.get("evidence", [])],
        error=str(doc.get("error", "")),
        suite_version=str(doc.get("suite_version", "")),
        difficulty=str(doc.get("difficulty", "")),
    )


def final_score(doc: Mapping[str, Any], weights: Weights) -> float:
    """The leaderboard's final score: the stored quality/speed/cost with the suite's current weights."""
    return round(weights.quality * doc["quality"] + weights.speed * doc["speed"] + weights.cost * doc["cost"], 3)


def leaderboard(suite: Suite, docs: Sequence[Mapping[str, Any]]) -> benchmark_pb2.Leaderboard:
    """One category's leaderboard: final scores recomputed with the suite's weights, best first."""
    scored = sorted(((final_score(d, suite.weights), d) for d in docs), key=lambda p: (-p[0], p[1]["provider"]))
    return benchmark_pb2.Leaderboard(
        category=suite.category,  # type: ignore[arg-type]
        scores=[provider_score(d, final=f) for f, d in scored],
        quality_weight=suite.weights.quality,
        speed_weight=suite.weights.speed,
        cost_weight=suite.weights.cost,
        suite_version=suite.version,
    )


def provider_score(doc: Mapping[str, Any], *, final: float | None = None) -> benchmark_pb2.ProviderScore:
    """A stored score; ``final`` replaces the stored final score (leaderboards pass the current weights')."""
    return benchmark_pb2.ProviderScore(
        provider=doc["provider"],
        model=str(doc.get("model", "")),
        category=category_value(doc["category"]),  # type: ignore[arg-type]
        quality=float(doc["quality"]),
        speed=float(doc["speed"]),
        cost=float(doc["cost"]),
        final_score=float(doc["final_score"] if final is None else final),
        items=int(doc["items"]),
        errors=int(doc["errors"]),
        p50_latency_ms=float(doc["p50_latency_ms"]),
        mean_cost_usd=float(doc["mean_cost_usd"]),
        run_id=doc["run_id"],
        measured_at=float(doc["measured_at"]),
        score_mode=str(doc.get("score_mode", "relative")),
        trigger=str(doc.get("trigger", "")),
    )


def suite_message(suite: Suite) -> benchmark_pb2.Suite:
    return benchmark_pb2.Suite(
        category=suite.category,  # type: ignore[arg-type]
        version=suite.version,
        items=len(suite.items),
        quality_weight=suite.weights.quality,
        speed_weight=suite.weights.speed,
        cost_weight=suite.weights.cost,
    )
