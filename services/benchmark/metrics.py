"""Prometheus metrics of the benchmark service (RPC metrics come from the runtime)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ITEMS = Counter("masterx_benchmark_items_total", "Suite items finished", ["provider", "category", "outcome"])
RUNS = Counter("masterx_benchmark_runs_total", "Runs ended, by final state", ["state", "trigger"])
SANDBOX_RUNS = Counter("masterx_benchmark_sandbox_runs_total", "Sandboxed code runs by outcome", ["outcome"])
SANDBOX_SECONDS = Histogram(
    "masterx_benchmark_sandbox_seconds",
    "Wall time of one sandboxed run",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
MONGO_WRITE_SECONDS = Histogram(
    "masterx_benchmark_mongo_write_seconds",
    "Time of one batch insert of item results or scores",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
