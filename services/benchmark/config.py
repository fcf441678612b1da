"""Benchmark service settings (environment variables, listed in the README table)."""

from __future__ import annotations

from masterx_runtime.config import env, settings


@settings("benchmark")
class BenchmarkSettings:
    """Suites, schedule, run limits, score normalisation and the code sandbox."""

    suites_dir: str = env(
        "BENCHMARK_SUITES_DIR",
        "",
        "Directory with one suite file per category (empty = the suites shipped with the service).",
    )
    min_suite_items: int = env(
        "BENCHMARK_MIN_SUITE_ITEMS", 20, "A suite file with fewer items is rejected at start.", minimum=1
    )
    schedule_hours: float = env(
        "BENCHMARK_SCHEDULE_HOURS",
        24.0,
        "Run every suite when its last run started more than this many hours ago (0 = no schedule, on-demand runs "
        "only). With the item and cost caps below a daily run costs at most BENCHMARK_SCHEDULE_MAX_COST_USD.",
        minimum=0,
    )
    schedule_check_seconds: float = env(
        "BENCHMARK_SCHEDULE_CHECK_SECONDS", 60.0, "How often the scheduler looks for due suites.", minimum=0.05
    )
    schedule_providers: tuple[str, ...] = env(
        "BENCHMARK_SCHEDULE_PROVIDERS",
        (),
        "Comma-separated providers for scheduled and calibration runs (empty = every provider the router lists).",
    )
    schedule_max_items: int = env(
        "BENCHMARK_SCHEDULE_MAX_ITEMS",
        8,
        "Cap on items per suite in scheduled runs (0 = all): 8 = 48 answers per provider per run.",
        minimum=0,
    )
    schedule_max_cost_usd: float = env(
        "BENCHMARK_SCHEDULE_MAX_COST_USD",
        1.0,
        "Cost cap of one scheduled run in US dollars, all providers together (0 = no cap); items not started when "
        "it is reached are skipped.",
        minimum=0,
    )
    calibration: bool = env(
        "BENCHMARK_CALIBRATION",
        True,
        "Calibrate automatically: when the router lists a provider with no score in some category (first start, a "
        "provider added, scores expired), run a small capped run for it in the background.",
    )
    calibration_items: int = env(
        "BENCHMARK_CALIBRATION_ITEMS",
        3,
        "Items per suite in a calibration run (3 = 18 answers per provider).",
        minimum=1,
    )
    calibration_max_cost_usd: float = env(
        "BENCHMARK_CALIBRATION_MAX_COST_USD",
        0.25,
        "Cost cap of one calibration run in US dollars (0 = no cap).",
        minimum=0,
    )
    calibration_retry_seconds: float = env(
        "BENCHMARK_CALIBRATION_RETRY_SECONDS",
        3600.0,
        "A provider whose calibration run started less than this long ago is not calibrated again (a failing or "
        "capped provider is retried at this pace, not every scheduler pass).",
        minimum=0,
    )
    lease_seconds: float = env(
        "BENCHMARK_LEASE_SECONDS",
        60.0,
        "Length of a suite lease in MongoDB; the running replica renews it every third of this. A crashed replica's "
        "suites become free after it.",
        minimum=0.3,
    )
    instance_id: str = env("BENCHMARK_INSTANCE_ID", "", "Lease owner id of this replica (empty = host:pid:random).")
    provider_concurrency: int = env(
        "BENCHMARK_PROVIDER_CONCURRENCY",
        4,
        "Requests in flight per provider across all runs of this replica.",
        minimum=1,
    )
    item_timeout_seconds: float = env(
        "BENCHMARK_ITEM_TIMEOUT_SECONDS", 60.0, "Deadline of one item's generation through the router.", minimum=0.05
    )
    judge_provider: str = env(
        "BENCHMARK_JUDGE_PROVIDER",
        "",
        "Provider (pinned through the router) that judges empathy answers; empty = the rubric's own pattern checks.",
    )
    judge_timeout_seconds: float = env(
        "BENCHMARK_JUDGE_TIMEOUT_SECONDS", 30.0, "Deadline of one judge call.", minimum=0.05
    )
    max_age_seconds: int = env(
        "BENCHMARK_MAX_AGE_SECONDS",
        7 * 24 * 3600,
        "Scores older than this are left out of leaderboards when the request gives no max age.",
        minimum=1,
    )
    score_mode: str = env(
        "BENCHMARK_SCORE_MODE",
        "reference",
        "Speed and cost scores: `reference` (absolute log scale between the reference values below, comparable "
        "across runs) or `relative` (100 = fastest / cheapest provider of the run; only comparable within a run).",
        choices=("relative", "reference"),
    )
    speed_fast_ms: float = env(
        "BENCHMARK_SPEED_FAST_MS", 500.0, "Reference mode: median latency scoring 100.", minimum=1
    )
    speed_slow_ms: float = env(
        "BENCHMARK_SPEED_SLOW_MS", 30000.0, "Reference mode: median latency scoring 0.", minimum=1
    )
    cost_cheap_usd: float = env(
        "BENCHMARK_COST_CHEAP_USD", 0.00001, "Reference mode: mean cost per item scoring 100.", minimum=1e-12
    )
    cost_expensive_usd: float = env(
        "BENCHMARK_COST_EXPENSIVE_USD", 0.02, "Reference mode: mean cost per item scoring 0.", minimum=1e-12
    )
    sandbox_isolation: str = env(
        "BENCHMARK_SANDBOX_ISOLATION",
        "namespaces",
        "`namespaces` (required by default: unshare with a private read-only root, no network, own PID/IPC "
        "namespaces; the service refuses to start without it), `rlimits` (weaker, explicit opt-in: resource "
        "limits and a socket block only; answer code can read what the service can) or `auto` (namespaces, "
        "else rlimits with a warning).",
        choices=("auto", "namespaces", "rlimits"),
    )
    sandbox_python: str = env(
        "BENCHMARK_SANDBOX_PYTHON",
        "",
        "Interpreter for answer code (empty = first of this Python, python3 that works).",
    )
    sandbox_timeout_seconds: float = env(
        "BENCHMARK_SANDBOX_TIMEOUT_SECONDS", 10.0, "Wall-clock limit of one sandboxed run (all tests).", minimum=0.5
    )
    sandbox_test_timeout_seconds: float = env(
        "BENCHMARK_SANDBOX_TEST_TIMEOUT_SECONDS",
        3.0,
        "Limit of one test (and of the answer's top-level code).",
        minimum=0.1,
    )
    sandbox_memory_mb: int = env(
        "BENCHMARK_SANDBOX_MEMORY_MB", 256, "Address-space limit per sandbox process.", minimum=32
    )
    sandbox_max_processes: int = env(
        "BENCHMARK_SANDBOX_MAX_PROCESSES", 8, "RLIMIT_NPROC of the sandbox user (stops fork bombs).", minimum=1
    )
    sandbox_output_bytes: int = env(
        "BENCHMARK_SANDBOX_OUTPUT_BYTES", 65536, "Output a sandboxed run may print before it is killed.", minimum=1024
    )
    sandbox_concurrency: int = env("BENCHMARK_SANDBOX_CONCURRENCY", 2, "Sandboxed runs at once.", minimum=1)

    def validate(self) -> list[str]:
        """Cross-field checks `load` cannot express."""
        problems = []
        if self.speed_fast_ms >= self.speed_slow_ms:
            problems.append("BENCHMARK_SPEED_FAST_MS must be below BENCHMARK_SPEED_SLOW_MS")
        if self.cost_cheap_usd >= self.cost_expensive_usd:
            problems.append("BENCHMARK_COST_CHEAP_USD must be below BENCHMARK_COST_EXPENSIVE_USD")
        if self.sandbox_test_timeout_seconds > self.sandbox_timeout_seconds:
            problems.append("BENCHMARK_SANDBOX_TEST_TIMEOUT_SECONDS must not exceed BENCHMARK_SANDBOX_TIMEOUT_SECONDS")
        return problems
