"""Operators' view on a running system: tracing to an OTLP receiver, the ops page, offline docs.

One system (as ``masterx up`` starts it, router on the shared fake LLM server) exports its spans
to a real OTLP/gRPC receiver started by the test. The browser tests drive headless Chromium
with every host but the loopback unresolvable, so ``/docs`` and ``/ops`` prove they need no
internet.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from masterx_runtime.launcher import LocalSystem
from masterx_runtime.testing.fake_llm import FakeLLMServer
from masterx_runtime.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from services.gateway.routes_ops import CATEGORIES
from tests.gateway.system import (
    ADMIN_KEY,
    configure_providers,
    gateway_client,
    gateway_url,
    headless_chromium,
    require_emotion_model,
    running_system,
    system_env,
)

SERVER, CLIENT = 2, 3  # OTLP span kinds
SERVER_REASON = "/masterx.reasoning.v1.ReasoningService/Reason"
ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def system(
    fake_llm: FakeLLMServer, otlp: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalSystem]:
    require_emotion_model()
    providers = configure_providers(fake_llm)
    providers[0]["daily_budget_usd"] = 0.5
    env = system_env(
        providers,
        GATEWAY_RATE_LIMIT_PER_MINUTE="100000",
        GATEWAY_OPS_SAMPLE_SECONDS="0.5",
        ROUTER_SCORES_REFRESH_SECONDS="0.5",  # new benchmark scores reach the ranking quickly
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",  # export within 0.1 s instead of 5 s
    )
    with running_system(tmp_path_factory.mktemp("masterx-ops"), env) as started:
        yield started


@pytest.fixture(scope="module")
def http(system: LocalSystem) -> Iterator[httpx.Client]:
    with gateway_client(system) as client:
        yield client


def _chat(http: httpx.Client, message: str, **extra: Any) -> dict[str, Any]:
    resp = http.post("/api/v1/chat", json={"message": message, **extra})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _root_of(spans: list[ReceivedSpan], request_id_route: str) -> ReceivedSpan | None:
    roots = [
        s for s in spans if s.service == "masterx-gateway" and s.kind == SERVER and s.name == f"POST {request_id_route}"
    ]
    return roots[-1] if roots else None


# ------------------------------------------------------------------ tracing


def test_one_chat_turn_is_one_connected_trace(http: httpx.Client, otlp: OtlpReceiver, system: LocalSystem) -> None:
    body = _chat(http, "What is 2 + 2? I keep getting it wrong", user_id="trace-1", deep_thinking=True)
    assert body["reply"].startswith("2 + 2 = 4")

    def complete(spans: list[ReceivedSpan]) -> bool:
        root = _root_of(spans, "/api/v1/chat")
        if root is None:
            return False
        trace = [s for s in spans if s.trace_id == root.trace_id]
        ids = {s.span_id for s in trace}
        names = {(s.service, s.name) for s in trace}
        # Each service exports in its own batches: wait until every parent has arrived too.
        connected = all(s.parent_span_id in ids for s in trace if s is not root)
        return connected and ("masterx-router", "POST") in names and ("masterx-reasoning", SERVER_REASON) in names

    spans = otlp.wait_for(complete)
    root = _root_of(spans, "/api/v1/chat")
    assert root is not None, sorted({(s.service, s.name) for s in spans})
    trace = otlp.trace(root.trace_id)
    by_id = {s.span_id: s for s in trace}
    # Connected: every span but the root hangs under a span of the same trace.
    orphans = [s for s in trace if s is not root and s.parent_span_id not in by_id]
    assert not orphans, [(s.service, s.name, s.parent_span_id) for s in orphans]
    assert root.parent_span_id == ""
    have = {(s.service, s.kind, s.name) for s in trace}
    for service, method in (
        ("emotion", "/masterx.emotion.v1.EmotionService/Analyze"),
        ("reasoning", "/masterx.reasoning.v1.ReasoningService/AllocateBudget"),
        ("reasoning", "/masterx.reasoning.v1.ReasoningService/Reason"),
        ("router", "/masterx.router.v1.RouterService/Generate"),
    ):
        assert ("masterx-gateway", CLIENT, method) in have, (method, sorted(have))
        assert (f"masterx-{service}", SERVER, method) in have, (method, sorted(have))
    # Deep thinking: reasoning calls the router, so the router serves spans under the reasoning server span.
    reasoning_server = {s.span_id for s in trace if s.service == "masterx-reasoning" and s.kind == SERVER}
    from_reasoning = [
        s
        for s in trace
        if s.service == "masterx-reasoning" and s.kind == CLIENT and by_id.get(s.parent_span_id) is not None
    ]
    assert from_reasoning, "the reasoning service's calls to the router are in the trace"
    assert any(_ancestor_in(s, by_id, reasoning_server) for s in from_reasoning)
    # The provider call: an httpx client span in the router, under the router's Generate server span.
    provider_calls = [s for s in trace if s.service == "masterx-router" and s.kind == CLIENT and s.name == "POST"]
    assert provider_calls, sorted(have)
    generate = {
        s.span_id for s in trace if s.service == "masterx-router" and s.name.endswith("/Generate") and s.kind == SERVER
    }
    assert any(_ancestor_in(s, by_id, generate) for s in provider_calls)
    url = next(iter(provider_calls)).attributes
    assert any(str(v).startswith("http://127.0.0.1") for v in url.values()), url
    # Health checks and the ops page's polling are not traced (they would bury the interesting traces).
    assert not [s for s in otlp.spans() if "grpc.health" in s.name]
    polled = ("/ListProviders", "/GetCosts", "/Route", "/GetScores")
    assert not [s for s in otlp.spans() if s.service == "masterx-gateway" and s.name.endswith(polled)]
    # The trace id is in the services' JSON logs.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        logged = [
            json.loads(line)
            for line in (system.logs / "router.log").read_text(errors="replace").splitlines()
            if line.startswith("{")
        ]
        if any(rec.get("trace_id") == root.trace_id for rec in logged):
            break
        time.sleep(0.1)
    assert any(rec.get("trace_id") == root.trace_id for rec in logged), "router log lines carry the trace id"


def _ancestor_in(span: ReceivedSpan, by_id: dict[str, ReceivedSpan], wanted: set[str]) -> bool:
    cur: ReceivedSpan | None = span
    while cur is not None:
        if cur.parent_span_id in wanted:
            return True
        cur = by_id.get(cur.parent_span_id)
    return False


# ------------------------------------------------------------------ ops JSON


def test_ops_overview_needs_the_admin_key_and_shows_the_system(http: httpx.Client) -> None:
    assert http.get("/api/v1/ops/overview").status_code == 401
    assert http.get("/api/v1/ops/overview", headers={"X-API-Key": "wrong"}).status_code == 401
    _chat(http, "Explain recursion please", user_id="ops-1", deep_thinking=False)
    data = http.get("/api/v1/ops/overview", headers=ADMIN).json()
    boards = {b["category"]: b for b in data["leaderboards"]}
    assert set(boards) == set(CATEGORIES) >= {"coding", "math", "research", "language", "empathy", "general"}
    for board in boards.values():
        assert {r["provider"] for r in board["rows"]} == {"fast", "smart"}
        assert all(r["source"] in ("benchmark", "prior", "config", "default") for r in board["rows"])
        assert [r["score"] for r in board["rows"]] == sorted((r["score"] for r in board["rows"]), reverse=True)
    names = {p["name"]: p for p in data["providers"]}
    assert set(names) == {"fast", "smart"}
    assert names["fast"]["daily_budget_usd"] == 0.5
    assert names["fast"]["history"], "the sampler keeps breaker samples"
    costs = data["costs"]
    assert len(costs["days"]) == 14 and set(costs["providers"]) >= {"fast", "smart"}
    assert {b["provider"]: b["budget_usd"] for b in costs["today"]}["fast"] == 0.5
    decision = data["decisions"][0]
    assert decision["provider"] in ("fast", "smart") and decision["reasons"]
    assert decision["endpoint"] == "chat"


def test_ops_starts_a_benchmark_run_and_follows_it(http: httpx.Client) -> None:
    started = http.post(
        "/api/v1/ops/benchmark-runs",
        json={"categories": ["math"], "providers": ["fast"], "max_items_per_suite": 2},
        headers=ADMIN,
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = {r["run_id"]: r for r in http.get("/api/v1/ops/overview", headers=ADMIN).json()["runs"]}
        if runs.get(run_id, {}).get("state") == "succeeded":
            break
        time.sleep(0.3)
    run = runs[run_id]
    assert run["state"] == "succeeded" and run["trigger"] == "ops"
    assert run["progress"] == 1.0
    deadline = time.monotonic() + 20  # the router picks the new scores up on its next refresh
    while time.monotonic() < deadline:
        board = {b["category"]: b for b in http.get("/api/v1/ops/overview", headers=ADMIN).json()["leaderboards"]}
        fast = next(r for r in board["math"]["rows"] if r["provider"] == "fast")
        if fast["source"] == "benchmark":
            break
        time.sleep(0.3)
    assert fast["source"] == "benchmark" and fast["source_detail"], fast
    assert fast["age_seconds"] is not None and fast["age_seconds"] < 120 and fast["items"] >= 1
    assert http.post("/api/v1/ops/benchmark-runs", json={"categories": ["astrology"]}, headers=ADMIN).status_code == 422


# ------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Offline: no host but the loopback resolves, so a CDN reference would fail to load.
    with headless_chromium("1400,1800", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1") as driver:
        yield driver


def _click(elements: list[Any]) -> bool:
    """Click the first element; False when there is none or it was redrawn meanwhile (retry)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        elements[0].click()
    except (IndexError, StaleElementReferenceException):
        return False
    return True


def _foreign_resources(driver: Any, base: str, allow_images: bool = False) -> list[str]:
    """Resources the page asked another host for (scripts, styles, fetches; images unless allowed)."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => [e.name, e.initiatorType])"
    )
    return [
        f"{name} ({kind})"
        for name, kind in entries
        if not name.startswith((base, "data:", "blob:")) and not (allow_images and kind == "img")
    ]


@pytest.mark.browser
def test_browser_docs_render_offline(browser: Any, system: LocalSystem) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = gateway_url(system)
    browser.get(f"{base}/docs")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "MasterX gateway" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 10)
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/api/v1/chat" in paths and "/api/v1/ops/overview" in paths
    assert not _foreign_resources(browser, base)
    browser.save_screenshot(str(Path(tempfile.gettempdir()) / "masterx-docs.png"))

    browser.get(f"{base}/redoc")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "h1"))
    wait.until(lambda d: "MasterX gateway" in d.find_element(By.CSS_SELECTOR, "h1").text)
    assert browser.find_elements(By.CSS_SELECTOR, "[data-section-id]"), "ReDoc rendered the operations"
    # ReDoc's "powered by" logo points at its CDN: blocked by the page's CSP and hidden; nothing else.
    assert not _foreign_resources(browser, base, allow_images=True)
    assert browser.execute_script("return document.fonts.status") == "loaded"


@pytest.mark.browser
def test_browser_ops_page_shows_live_charts(
    browser: Any, system: LocalSystem, http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    """Log in, see every section drawn from the running system, watch it refresh, run a benchmark."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = gateway_url(system)
    _chat(http, "I keep failing at recursion and I am so frustrated", user_id="ops-browser")
    browser.get(f"{base}/ops")
    wait = WebDriverWait(browser, 30)
    css = lambda sel: browser.find_elements(By.CSS_SELECTOR, sel)  # noqa: E731

    def q(sel: str, expr: str = "e.textContent") -> list[Any]:
        """Read matching elements in one script call: the page redraws, so no element handles."""
        return browser.execute_script(f"return [...document.querySelectorAll(arguments[0])].map(e => {expr})", sel)

    # Without a key the page asks for one; a wrong key is refused with the server's message.
    wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    browser.find_element(By.ID, "key").send_keys("wrong-key")
    browser.find_element(By.ID, "login-button").click()
    wait.until(lambda d: "invalid" in d.find_element(By.ID, "login-error").text)
    browser.find_element(By.ID, "key").clear()
    browser.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    browser.find_element(By.ID, "login-button").click()
    wait.until(lambda d: d.find_element(By.ID, "dash").is_displayed())
    wait.until(lambda _: len(css("#boards .board")) == len(CATEGORIES))

    # Leaderboards: three bars per provider per category, each score's source and age.
    assert set(q('#boards .board[data-category="math"] .board-row', "e.dataset.provider")) == {"fast", "smart"}
    assert len(q('#boards .board[data-category="math"] rect.bar')) == 6
    sources = q('#boards .board[data-category="math"] text.source')
    assert all(t in ("prior", "config", "default") or t.startswith("benchmark ·") for t in sources), sources
    # Providers: a breaker badge and a failure-rate line over the sampled history.
    wait.until(lambda _: len(css("#providers .provider svg polyline.rate")) == 2)
    assert set(q("#providers .badge")) <= {"closed", "half open", "open"}
    # Spend: stacked bars for today's chats, today's spend against fast's budget.
    wait.until(lambda _: css("#spend-chart rect.bar"))
    (fast_budget,) = q('#budgets .budget[data-provider="fast"]')
    assert "of $0.50 today" in fast_budget, fast_budget
    # Decisions: the chat turn above, with the router's reasons.
    wait.until(lambda _: css("#decisions .decision"))
    assert q("#decisions .decision .reasons li")

    # Refresh: a new chat turn shows up without reloading the page.
    before = len(css("#decisions .decision"))
    stamp = browser.find_element(By.ID, "updated").get_attribute("data-generated")
    reply = _chat(http, "Thanks! What is 2 + 2?", user_id="ops-browser")
    wait.until(lambda d: d.find_element(By.ID, "updated").get_attribute("data-generated") != stamp)
    wait.until(lambda _: len(css("#decisions .decision")) > before)
    assert q("#decisions .decision", "e.dataset.request")[0] == reply["request_id"]

    # Benchmark run from the page: progress shows, the run ends, its scores feed the board.
    wait.until(lambda _: css("#run-categories input"))
    browser.find_element(By.CSS_SELECTOR, '#run-categories input[value="coding"]').click()
    items = browser.find_element(By.ID, "run-items")
    items.clear()
    items.send_keys("2")
    browser.find_element(By.ID, "run-providers").send_keys("fast")
    browser.find_element(By.ID, "run-start").click()
    wait.until(lambda d: "started" in d.find_element(By.ID, "run-msg").text)
    run_id = browser.find_element(By.ID, "run-msg").text.split()[-1]
    run_sel = f'#runs .run[data-run="{run_id}"]'
    WebDriverWait(browser, 90).until(lambda _: css(f'{run_sel}[data-state="succeeded"]'))
    assert "2/2 items" in q(run_sel)[0]
    WebDriverWait(browser, 30).until(
        lambda _: any(t.startswith("benchmark ·") for t in q('#boards .board[data-category="coding"] text.source'))
    )
    # Cancel: a slow run (the provider takes 2 s per answer) stops from its button.
    fake_llm.configure("fast", fake_llm.behavior("fast"), latency_ms=2000)
    try:
        items.clear()
        items.send_keys("12")
        browser.find_element(By.ID, "run-start").click()
        wait.until(
            lambda d: (
                "started" in d.find_element(By.ID, "run-msg").text
                and run_id not in d.find_element(By.ID, "run-msg").text
            )
        )
        slow_id = browser.find_element(By.ID, "run-msg").text.split()[-1]
        slow_sel = f'#runs .run[data-run="{slow_id}"]'
        wait.until(lambda _: _click(css(f"{slow_sel} button.cancel")))  # rows redraw each second
        wait.until(lambda _: css(f'{slow_sel}[data-state="cancelled"]'))
        assert "cancelled" in browser.find_element(By.ID, "run-msg").text
    finally:
        fake_llm.configure("fast", fake_llm.behavior("fast"), latency_ms=0)
    assert not _foreign_resources(browser, base)
    shot = Path(tempfile.gettempdir()) / "masterx-ops.png"
    png = browser.get_screenshot_as_png()
    shot.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, "the screenshot shows a drawn page"
    # Everything the page must show is on it at the time of the screenshot.
    for sel in (
        "#boards .board",
        "#providers .provider",
        "#spend-chart svg",
        "#budgets .budget",
        "#runs .run",
        "#decisions .decision",
    ):
        assert any(q(sel, "e.offsetParent !== null")), sel
