"""`python -m services.router` as a process: readable config errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.router"],
        cwd=ROOT,
        env={**os.environ, "ROUTER_LOCAL_PROVIDER": "off", "ROUTER_DISCOVER_ENV_KEYS": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_providers_config_exits_2_with_every_problem_listed() -> None:
    doc = '[{"name": "a", "kind": "openai", "model": "m", "api_key": "sk-do-not-print-me"}, {"name": "b"}]'
    proc = run({"ROUTER_PROVIDERS_JSON": doc})
    assert proc.returncode == 2
    assert "base_url is required" in proc.stderr and "api_key_env" in proc.stderr and "kind ''" in proc.stderr
    assert "sk-do-not-print-me" not in proc.stderr + proc.stdout


def test_bad_setting_exits_2() -> None:
    proc = run({"ROUTER_BREAKER_WINDOW_TYPE": "sideways"})
    assert proc.returncode == 2
    assert "ROUTER_BREAKER_WINDOW_TYPE" in proc.stderr and "count, time" in proc.stderr


def test_no_provider_at_all_exits_2() -> None:
    proc = run({})
    assert proc.returncode == 2
    assert "no providers configured" in proc.stderr
