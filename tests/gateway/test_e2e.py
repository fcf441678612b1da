"""End to end: the whole system started as ``masterx up`` does, driven over HTTP.

The router's providers point at the shared test LLM server (scripted, instant answers).
The module shares one system; the test that stops the emotion process runs last.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from masterx_runtime.launcher import LocalSystem
from masterx_runtime.testing.fake_llm import FakeLLMServer
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


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def system(fake_llm: FakeLLMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    require_emotion_model()
    env = system_env(configure_providers(fake_llm), GATEWAY_RATE_LIMIT_PER_MINUTE="100000")
    with running_system(tmp_path_factory.mktemp("masterx"), env) as started:
        yield started


@pytest.fixture(scope="module")
def http(system: LocalSystem) -> Iterator[httpx.Client]:
    with gateway_client(system) as client:
        yield client


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        events.append((name, json.loads("\n".join(data))))
    return events


def test_ready_with_every_dependency(http: httpx.Client) -> None:
    resp = http.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["dependencies"] == {
        "emotion": "SERVING",
        "reasoning": "SERVING",
        "router": "SERVING",
        "benchmark": "SERVING",
        "redis": "SERVING",
    }


def test_chat_turn(http: httpx.Client, fake_llm: FakeLLMServer) -> None:
    resp = http.post(
        "/api/v1/chat",
        json={"message": "What is 2 + 2? I keep getting it wrong and it is so frustrating", "user_id": "e2e-1"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["reply"].startswith("2 + 2 = 4")
    assert body["degraded"] == []
    emotion = body["emotion"]
    assert emotion["primary"]
    assert set(emotion["pad"]) == {"pleasure", "arousal", "dominance"}
    assert all(0 <= v <= 1 for v in emotion["pad"].values())
    assert emotion["learning_state"] not in ("", "unspecified")
    assert emotion["intervention"]["level"] != "unspecified"
    provider = body["provider"]
    assert provider["name"] in ("fast", "smart")
    assert provider["reasons"], "the decision explains itself"
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["usage"]["cost_usd"] > 0
    assert body["budget"]["answer_tokens"] > 0
    timings = body["timings_ms"]
    for stage in ("emotion_ms", "budget_ms", "generate_ms", "total_ms"):
        assert timings[stage] > 0
    assert timings["total_ms"] >= timings["generate_ms"]
    # The provider saw the tutor system prompt and the student's message.
    sent = fake_llm.requests(provider["name"])[-1]["body"]
    assert "MasterX" in json.dumps(sent)
    assert "What is 2 + 2?" in json.dumps(sent)


def test_streaming_chat_sends_emotion_first_then_tokens_then_usage(http: httpx.Client, fake_llm: FakeLLMServer) -> None:
    # Tokens a few milliseconds apart, as a real model sends them: events that reach the router
    # in one network read are forwarded as one delta, so an instant answer may be a single piece.
    for name in ("fast", "smart"):
        fake_llm.configure(name, fake_llm.behavior(name), tokens_per_second=200)
    try:
        resp = http.post("/api/v1/chat/stream", json={"message": "Explain recursion please", "deep_thinking": False})
    finally:
        for name in ("fast", "smart"):
            fake_llm.configure(name, fake_llm.behavior(name), tokens_per_second=0)
    assert resp.status_code == 200
    events = sse_events(resp.text)
    names = [n for n, _ in events]
    assert names[:4] == ["meta", "emotion", "budget", "decision"], names
    deltas = [d["text"] for n, d in events if n == "delta"]
    assert "".join(deltas).startswith("Recursion is a function calling itself")
    assert len(deltas) > 1, "the answer arrives in pieces"
    assert names[-2:] == ["usage", "done"]
    done = events[-1][1]
    assert done["provider"]["name"] in ("fast", "smart")
    assert done["reply_chars"] == len("".join(deltas))


def test_deep_thinking_streams_reasoning_steps_before_the_answer(http: httpx.Client) -> None:
    resp = http.post("/api/v1/chat/stream", json={"message": "What is 2 + 2?", "deep_thinking": True})
    events = sse_events(resp.text)
    names = [n for n, _ in events]
    assert "error" not in names, events[-1]
    assert "reasoning" in names, names
    assert names.index("reasoning") < names.index("decision") < names.index("delta")
    result = dict(events)["reasoning"]
    assert result["stop_reason"]
    assert result["search"]["nodes"] >= 1


def test_openai_client_non_streaming_and_streaming(system: LocalSystem) -> None:
    client = openai.OpenAI(base_url=f"{gateway_url(system)}/v1", api_key="not-needed", max_retries=0)
    models = [m.id for m in client.models.list()]
    assert models[0] == "masterx" and {"fast", "smart"} <= set(models)

    done = client.chat.completions.create(model="masterx", messages=[{"role": "user", "content": "What is 2 + 2?"}])
    assert (done.choices[0].message.content or "").startswith("2 + 2 = 4")
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.total_tokens > 0
    assert done.model in ("fast", "smart")
    # the router analysed the message itself and started the provider call meanwhile
    routed = (done.model_extra or {})["masterx"]
    assert routed["emotion"] is not None and routed["emotion"]["primary"]
    assert routed["speculation"] in ("confirmed", "switched")

    pinned = client.chat.completions.create(
        model="smart",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
    )
    assert pinned.model == "smart"
    assert pinned.choices[0].message.content == "Reply from smart: Say hi"
    # A pinned model does not wait for the emotion analysis; it runs alongside and still arrives.
    extension = (pinned.model_extra or {})["masterx"]
    assert extension["emotion"] is not None and extension["emotion"]["primary"]
    pinned_stream = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "Say hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    tail = [c for c in pinned_stream if c.usage is not None]
    assert len(tail) == 1 and (tail[0].model_extra or {})["masterx"]["emotion"] is not None

    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Explain recursion"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces).startswith("Recursion is a function calling itself")
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0

    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-provider", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    client.close()


def test_provider_health_benchmarks_and_costs(http: httpx.Client) -> None:
    health = http.get("/api/v1/provider-health").json()
    assert {p["name"] for p in health["providers"]} == {"fast", "smart"}
    assert all(p["breaker_state"] in ("closed", "open", "half_open") for p in health["providers"])
    boards = http.get("/api/v1/benchmarks", params={"category": "math"})
    assert boards.status_code == 200, boards.text
    assert boards.json()["leaderboards"][0]["category"] == "math"
    assert http.get("/api/v1/benchmarks", params={"category": "astrology"}).status_code == 422
    assert http.get("/api/v1/costs").status_code == 401
    deadline = time.monotonic() + 5
    while True:  # the chats above end up in the ledger (possibly written after the answer)
        costs = http.get("/api/v1/costs", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert costs.status_code == 200, costs.text
        if costs.json()["total_requests"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert costs.json()["total_requests"] > 0
    assert costs.json()["total_cost_usd"] > 0


def test_admin_key_guards_benchmark_runs(http: httpx.Client) -> None:
    body = {"categories": ["math"], "providers": ["fast"], "max_items_per_suite": 1}
    assert http.post("/api/v1/admin/run-benchmarks", json=body).status_code == 401
    assert http.post("/api/v1/admin/run-benchmarks", json=body, headers={"X-API-Key": "nope"}).status_code == 401
    started = http.post("/api/v1/admin/run-benchmarks", json=body, headers={"X-API-Key": ADMIN_KEY})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    assert started.headers["location"].endswith(run_id)
    status = http.get(f"/api/v1/admin/benchmark-runs/{run_id}", headers={"X-API-Key": ADMIN_KEY})
    assert status.status_code == 200
    assert status.json()["run_id"] == run_id
    missing = http.get("/api/v1/admin/benchmark-runs/does-not-exist", headers={"X-API-Key": ADMIN_KEY})
    assert missing.status_code in (400, 404)
    assert missing.json()["error"]["service"] == "benchmark"


def test_practice_problem_and_explanation(http: httpx.Client) -> None:
    plan = http.post("/api/v1/practice/plan", json={"student_id": "e2e-student", "slots": 2, "seed": 7})
    assert plan.status_code == 200, plan.text
    assert len(plan.json()["slots"]) == 2
    problem = http.post("/api/v1/practice/problem", json={"student_id": "e2e-student", "terms": 3, "seed": 7})
    assert problem.status_code == 200, problem.text
    generated = problem.json()
    assert len(generated["terms"]) == 3
    assert generated["answer"] == sum(generated["terms"])
    explained = http.post("/api/v1/practice/explain", json={"trace": generated["trace"]})
    assert explained.status_code == 200, explained.text
    assert explained.json()["lines"]
    impossible = http.post(
        "/api/v1/practice/problem", json={"student_id": "e2e-student", "bounds": {"min": 10, "max": 1}}
    )
    assert impossible.status_code in (400, 409), impossible.text


def test_bad_input_is_4xx_with_a_message(http: httpx.Client) -> None:
    malformed = http.post("/api/v1/chat", content=b'{"message": ', headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["error"]["message"]
    missing = http.post("/api/v1/chat", json={"user_id": "x"})
    assert missing.status_code == 422
    assert "message: Field required" in missing.json()["error"]["message"]
    huge = http.post("/api/v1/chat", json={"message": "x" * 2_000_000})
    assert huge.status_code == 413
    assert "larger than the limit" in huge.json()["error"]["message"]


@pytest.mark.browser
def test_browser_chat_shows_reply_and_emotion(system: LocalSystem) -> None:
    """Headless Chromium: type a message, see the streamed reply, the emotion and the provider."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with headless_chromium("1280,900") as driver:
        driver.get(f"{gateway_url(system)}/")
        wait = WebDriverWait(driver, 30)

        def answered(n: int) -> Any:
            return lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .meta, .msg.error")) >= n

        for i, text in enumerate(["I keep failing at recursion and I am so frustrated", "Thanks! What is 2 + 2?"], 1):
            box = driver.find_element(By.ID, "input")
            box.send_keys(text)
            driver.find_element(By.ID, "send").click()
            wait.until(answered(i))
        replies = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")]
        assert "Recursion is a function calling itself" in replies[0]
        assert "2 + 2 = 4" in replies[1]
        assert not driver.find_elements(By.CSS_SELECTOR, ".msg.error")
        assert driver.find_element(By.ID, "emotion-primary").text not in ("", "—")
        assert driver.find_element(By.ID, "learning-state").text not in ("", "—")
        assert driver.find_element(By.ID, "provider-name").text in ("fast", "smart")
        assert driver.find_elements(By.CSS_SELECTOR, "#provider-reasons li")
        # One chart point and one learning-state chip per analysed message.
        assert len(driver.find_elements(By.CSS_SELECTOR, "#chart circle.point")) == 2
        assert len(driver.find_elements(By.CSS_SELECTOR, "#states .state-chip")) == 2
        # Urgency and the calibrated Ekman groups are shown; "did this help?" records the outcome.
        assert "/7" in driver.find_element(By.ID, "urgency").text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#ekman .ekman-chip")) == 7
        driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .feedback .fb")[0].click()
        wait.until(lambda d: "Thanks, noted: it helped." in d.find_elements(By.CSS_SELECTOR, ".msg.assistant")[0].text)
        driver.save_screenshot(str(Path(tempfile.gettempdir()) / "masterx-gateway-browser.png"))


def test_client_disconnect_cancels_the_provider_call(system: LocalSystem, fake_llm: FakeLLMServer) -> None:
    """Closing the HTTP request cancels gateway -> router -> provider (no request left running)."""
    fake_llm.configure("smart", fake_llm.behavior("smart"), error="hang", hang_seconds=60)
    try:
        before = fake_llm.stats("smart")["requests"]
        timeout = httpx.Timeout(30, read=2)
        with httpx.Client(base_url=gateway_url(system), timeout=timeout) as client, pytest.raises(httpx.ReadTimeout):
            client.post("/api/v1/chat", json={"message": "Say hi", "provider": "smart"})
        assert fake_llm.stats("smart")["requests"] == before + 1
        deadline = time.monotonic() + 10
        while fake_llm.stats("smart")["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fake_llm.stats("smart")["in_flight"] == 0
    finally:
        fake_llm.configure("smart", fake_llm.behavior("smart"), error="none")


def test_emotion_down_is_503_naming_it_and_chat_still_works(system: LocalSystem, http: httpx.Client) -> None:
    """Runs last: stops the emotion process for good."""
    system.children["emotion"].stop()
    resp = http.post("/api/v1/emotion", json={"text": "hello"})
    assert resp.status_code == 503
    assert resp.json()["error"]["service"] == "emotion"
    chat = http.post("/api/v1/chat", json={"message": "What is 2 + 2?"})
    assert chat.status_code == 200, chat.text
    body = chat.json()
    assert body["reply"].startswith("2 + 2 = 4")
    assert body["emotion"] is None
    assert [d["service"] for d in body["degraded"]] == ["emotion"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ready = http.get("/readyz")
        if ready.json()["not_serving"]:
            break
    assert ready.json()["not_serving"] == ["emotion"]
    assert ready.status_code == 200, ready.text  # chat still works: emotion is optional
    assert ready.json()["degraded"] == ["emotion"] and ready.json()["blocking"] == []
