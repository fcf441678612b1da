"""`python -m services.benchmark` as a process: config errors exit 2, SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from masterx_runtime.clients import wait_until_serving
from masterx_runtime.testing.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCHMARK_", "MASTERX_"))}
    return env | {"MASTERX_METRICS_PORT": "-1", "MASTERX_LOG_FORMAT": "text"} | extra


def test_invalid_settings_exit_2_with_every_problem_listed() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.benchmark"],
        env=_env(
            BENCHMARK_SCORE_MODE="best", BENCHMARK_PROVIDER_CONCURRENCY="0", BENCHMARK_JUDGE_TIMEOUT_SECONDS="soon"
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    for name in ("BENCHMARK_SCORE_MODE", "BENCHMARK_PROVIDER_CONCURRENCY", "BENCHMARK_JUDGE_TIMEOUT_SECONDS"):
        assert name in proc.stderr


async def test_serves_then_stops_cleanly_on_sigterm(mongo_url: str, mongo_db_name: str) -> None:
    port = free_port()
    env = _env(
        MONGO_URL=mongo_url, MONGO_DB=mongo_db_name, MASTERX_GRPC_PORT=str(port), ROUTER_ADDR=f"127.0.0.1:{free_port()}"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.benchmark",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until_serving(f"127.0.0.1:{port}", "masterx.benchmark.v1.BenchmarkService", timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
