"""Prometheus metrics of the router (breaker metrics live in breaker.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ATTEMPTS = Counter("masterx_router_attempts_total", "Provider attempts by outcome", ["provider", "outcome"])
TOKENS = Counter("masterx_router_tokens_total", "Tokens used", ["provider", "direction"])
COST = Counter("masterx_router_cost_usd_total", "Money spent, USD", ["provider"])
SPECULATION = Counter(
    "masterx_router_speculation_total",
    "Requests with analyze_emotion by what became of the provider call started before the analysis",
    ["outcome"],
)
FALLBACKS = Counter("masterx_router_fallbacks_total", "Requests answered by a provider other than the first choice")
DECISION_SECONDS = Histogram(
    "masterx_router_decision_seconds",
    "Time to make a routing decision",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
)
PROVIDER_TTFT = Histogram(
    "masterx_router_provider_ttft_seconds",
    "Time to first token of successful attempts",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
