"""The whole system as ``masterx up`` runs it, with the router pointed at the shared test LLM server.

Used by the end-to-end tests and by ``bench/bench_gateway.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from masterx_runtime.launcher import LocalSystem
from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior, ReplyRule
from services.emotion.config import DEFAULT_MODEL_DIR

ADMIN_KEY = "e2e-admin-key-7f3a9c"

#: Scripted tutor answers (the fake providers match the last user message).
RULES = [
    ReplyRule(match=r"2\s*\+\s*2", reply="2 + 2 = 4. Count two, then two more: four."),
    ReplyRule(match=r"recursion", reply="Recursion is a function calling itself on a smaller input until a base case."),
]


def configure_providers(srv: FakeLLMServer, **behavior: Any) -> list[dict[str, Any]]:
    """Two fake providers (OpenAI and Anthropic wire formats) answering instantly; their entries."""
    for name in ("fast", "smart"):
        srv.configure(name, ProviderBehavior(rules=list(RULES), default_reply=f"Reply from {name}: {{last_user}}"))
        if behavior:
            srv.configure(name, srv.behavior(name), **behavior)
    return [
        srv.provider_entry("fast", kind="openai", input_price_per_mtok=0.15, output_price_per_mtok=0.6),
        srv.provider_entry(
            "smart", kind="anthropic", input_price_per_mtok=3.0, output_price_per_mtok=15.0, quality={"default": 80}
        ),
    ]


def emotion_model_dir() -> Path | None:
    """The emotion model to run: EMOTION_TEST_MODEL_DIR, else the shipped one; None if not trained yet."""
    path = Path(os.environ.get("EMOTION_TEST_MODEL_DIR") or DEFAULT_MODEL_DIR)
    return path if (path / "model.json").exists() else None


def system_env(providers: list[dict[str, Any]], **extra: str) -> dict[str, str]:
    model = emotion_model_dir()
    env = {
        "EMOTION_MODEL_DIR": str(model or ""),
        "ROUTER_PROVIDERS_JSON": json.dumps(providers),
        "ROUTER_LOCAL_PROVIDER": "off",
        "ROUTER_DISCOVER_ENV_KEYS": "0",
        "GATEWAY_ADMIN_API_KEYS": ADMIN_KEY,
        "MASTERX_LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


def start_system(state_dir: Path, env: dict[str, str], timeout: float = 180.0) -> LocalSystem:
    """Redis, the MongoDB-wire server and all five services as processes, on free ports."""
    system = LocalSystem(state_dir=state_dir, fixed_ports=False, env=env)
    system.start(timeout=timeout)
    return system


def gateway_url(system: LocalSystem) -> str:
    return system.children["gateway"].url


def require_emotion_model() -> None:
    """Skip the test while the emotion service has no model to run."""
    import pytest  # lazily: bench/bench_gateway.py imports this module without pytest

    if emotion_model_dir() is None:
        pytest.skip(f"the emotion service has no model yet in {DEFAULT_MODEL_DIR} (make train-emotion)")


@contextlib.contextmanager
def running_system(state_dir: Path, env: dict[str, str]) -> Iterator[LocalSystem]:
    """``start_system(state_dir, env)``, stopped on exit."""
    started = start_system(state_dir, env)
    try:
        yield started
    finally:
        started.stop()


@contextlib.contextmanager
def gateway_client(system: LocalSystem) -> Iterator[httpx.Client]:
    """An HTTP client of the system's gateway."""
    with httpx.Client(base_url=gateway_url(system), timeout=60) as client:
        yield client


@contextlib.contextmanager
def headless_chromium(window_size: str, *extra_flags: str) -> Iterator[Any]:
    """A headless Chromium webdriver with a throwaway profile (skips the test without chromium and
    chromedriver); quit and its profile removed on exit."""
    import pytest

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="masterx-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={window_size}",
        *extra_flags,
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
