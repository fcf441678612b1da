"""The shared fake LLM server, exercised through real HTTP with httpx and the OpenAI SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior, ReplyRule

MSGS: Any = [{"role": "system", "content": "You are a tutor."}, {"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture
async def srv() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event, data) pairs of an SSE body (LF or CRLF separated)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        out.append((event, "\n".join(data)))
    return out


async def test_openai_sdk_full_and_streamed_answers_with_usage(srv: FakeLLMServer) -> None:
    srv.configure("fast", ProviderBehavior(rules=[ReplyRule(match=r"2\s*\+\s*2", reply="The answer is 4.")]))
    client = openai.AsyncOpenAI(base_url=srv.base_url("fast"), api_key="k", max_retries=0)
    full = await client.chat.completions.create(model="m1", messages=MSGS)
    assert full.choices[0].message.content == "The answer is 4."
    assert full.choices[0].finish_reason == "stop"
    assert full.model == "m1"
    assert full.usage is not None
    # input: "You are a tutor." (5) + "What is 2 + 2?" (6); output: 4 pieces
    assert (full.usage.prompt_tokens, full.usage.completion_tokens) == (11, 4)

    stream = await client.chat.completions.create(
        model="m1",
        messages=MSGS,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            deltas.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(deltas) == "The answer is 4."
    assert usage is not None and usage.completion_tokens == 4 and usage.total_tokens == 15
    stats = srv.stats("fast")
    assert stats["requests"] == 2 and stats["streams"] == 1 and stats["completed"] == 2


async def test_openai_stream_without_include_usage_has_no_usage_chunk(
    srv: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    body = {"model": "m", "messages": MSGS, "stream": True}
    r = await http.post(srv.base_url("x") + "/chat/completions", json=body)
    events = sse_events(r.text)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_anthropic_messages_full_and_stream_event_sequence(srv: FakeLLMServer, http: httpx.AsyncClient) -> None:
    srv.configure("claude", default_reply="Hello from {provider} using {model}.")
    url = srv.base_url("claude", "anthropic") + "/v1/messages"
    body = {"model": "c-3", "max_tokens": 50, "system": "Be kind.", "messages": [{"role": "user", "content": "hi"}]}
    r = await http.post(url, json=body)
    data = r.json()
    assert r.status_code == 200
    assert data["content"][0]["text"] == "Hello from claude using c-3."
    assert data["stop_reason"] == "end_turn"
    assert data["usage"] == {"input_tokens": 4, "output_tokens": 5}  # "Be kind." + "hi"

    r = await http.post(url, json={**body, "stream": True})
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(json.loads(d)["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert text == "Hello from claude using c-3."
    assert json.loads(events[0][1])["message"]["usage"]["input_tokens"] == 4
    assert json.loads(events[-2][1])["usage"]["output_tokens"] == 5


async def test_anthropic_requires_max_tokens(srv: FakeLLMServer, http: httpx.AsyncClient) -> None:
    r = await http.post(
        srv.base_url("claude", "anthropic") + "/v1/messages",
        json={"model": "c", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 400
    assert "max_tokens" in r.json()["error"]["message"]


async def test_gemini_generate_stream_sse_and_json_array(srv: FakeLLMServer, http: httpx.AsyncClient) -> None:
    srv.configure("gem", default_reply="Two plus two is four.")
    base = srv.base_url("gem", "gemini")
    body = {
        "contents": [{"role": "user", "parts": [{"text": "What is 2 + 2?"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 3},
    }
    r = await http.post(f"{base}/models/gemini-x:generateContent", json=body)
    data = r.json()
    assert data["candidates"][0]["content"]["parts"][0]["text"] == "Two plus two"
    assert data["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert data["usageMetadata"] == {"promptTokenCount": 9, "candidatesTokenCount": 3, "totalTokenCount": 12}

    del body["generationConfig"]
    r = await http.post(f"{base}/models/gemini-x:streamGenerateContent?alt=sse", json=body)
    assert "\r\n\r\n" in r.text
    chunks = [json.loads(d) for _, d in sse_events(r.text)]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "Two plus two is four."
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 5

    r = await http.post(f"{base}/models/gemini-x:streamGenerateContent", json=body)
    array = r.json()
    assert isinstance(array, list) and array[0]["candidates"][0]["content"]["parts"][0]["text"] == text


async def test_rules_match_last_user_or_whole_prompt_in_order(srv: FakeLLMServer, http: httpx.AsyncClient) -> None:
    srv.configure(
        "r",
        rules=[
            ReplyRule(match="tutor", reply="system-matched"),  # only in the system prompt: no match
            ReplyRule(match=r"\bpython\b", reply="code answer"),
            ReplyRule(match="tutor", reply="prompt-matched", scope="prompt"),
        ],
        default_reply="fallback {last_user}",
    )

    async def ask(text: str) -> str:
        msgs = [MSGS[0], {"role": "user", "content": text}]
        r = await http.post(srv.base_url("r") + "/chat/completions", json={"model": "m", "messages": msgs})
        return str(r.json()["choices"][0]["message"]["content"])

    assert await ask("How do I write a Python loop?") == "code answer"
    assert await ask("Tell me a story") == "prompt-matched"
    srv.configure("r", default_reply="echo: {last_user}")
    assert await ask("ping") == "echo: ping"


@pytest.mark.parametrize(
    ("mode", "status", "err_type"),
    [
        ("http_500", 500, "server_error"),
        ("http_429", 429, "rate_limit_error"),
        ("http_401", 401, "invalid_request_error"),
    ],
)
async def test_injected_http_errors_use_the_provider_error_body(
    srv: FakeLLMServer, http: httpx.AsyncClient, mode: str, status: int, err_type: str
) -> None:
    srv.configure("bad", error=mode)
    r = await http.post(srv.base_url("bad") + "/chat/completions", json={"model": "m", "messages": MSGS})
    assert r.status_code == status
    assert r.json()["error"]["type"] == err_type
    if status == 429:
        assert r.headers["retry-after"] == "1"
    assert srv.stats("bad")["errors"] == {mode: 1}


async def test_api_key_is_checked_when_configured(srv: FakeLLMServer, http: httpx.AsyncClient) -> None:
    srv.configure("secure", api_key="sekrit")
    url = srv.base_url("secure") + "/chat/completions"
    body = {"model": "m", "messages": MSGS}
    assert (await http.post(url, json=body)).status_code == 401
    assert (await http.post(url, json=body, headers={"authorization": "Bearer sekrit"})).status_code == 200
    gem = srv.base_url("secure", "gemini") + "/models/g:generateContent"
    gbody = {"contents": [{"parts": [{"text": "hi"}]}]}
    assert (await http.post(gem, json=gbody, headers={"x-goog-api-key": "nope"})).status_code == 401
    assert (await http.post(gem, json=gbody, headers={"x-goog-api-key": "sekrit"})).status_code == 200


async def test_error_rate_is_seeded_and_repeatable(srv: FakeLLMServer, http: httpx.AsyncClient) -> None:
    async def pattern() -> list[int]:
        srv.configure("flaky", error="http_500", error_rate=0.5, seed=7)
        url = srv.base_url("flaky") + "/chat/completions"
        return [(await http.post(url, json={"model": "m", "messages": MSGS})).status_code for _ in range(20)]

    first = await pattern()
    assert first == await pattern()
    assert 3 <= first.count(500) <= 17 and 200 in first


async def test_hang_never_answers_and_releases_when_client_leaves(srv: FakeLLMServer) -> None:
    srv.configure("slow", error="hang")
    async with httpx.AsyncClient(timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(srv.base_url("slow") + "/chat/completions", json={"model": "m", "messages": MSGS})
    for _ in range(50):
        if srv.stats("slow")["in_flight"] == 0:
            break
        await asyncio.sleep(0.01)
    assert srv.stats("slow")["in_flight"] == 0
    assert srv.stats("slow")["hung"] == 1


async def test_break_stream_after_n_chunks_drops_the_connection(srv: FakeLLMServer, http: httpx.AsyncClient) -> None:
    srv.configure("brk", error="break_stream", break_after_chunks=2, default_reply="one two three four")
    received: list[str] = []
    body = {"model": "m", "messages": MSGS, "stream": True}
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream("POST", srv.base_url("brk") + "/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    received.append(json.loads(line[6:])["choices"][0]["delta"].get("content", ""))
    assert "".join(received) == "one two"
    with pytest.raises(httpx.RemoteProtocolError):  # a non-streaming call is dropped before any answer
        await http.post(srv.base_url("brk") + "/chat/completions", json={"model": "m", "messages": MSGS})
    assert srv.stats("brk")["broken_streams"] == 2


async def test_ttft_and_tokens_per_second_pace_the_stream(srv: FakeLLMServer, http: httpx.AsyncClient) -> None:
    srv.configure("paced", ttft_ms=150, tokens_per_second=20, default_reply="a b c d e")
    body = {"model": "m", "messages": MSGS, "stream": True}
    started = time.perf_counter()
    first = None
    async with http.stream("POST", srv.base_url("paced") + "/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if first is None and '"content": "a"' in line:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    assert first is not None and first >= 0.15
    assert total >= 0.15 + 4 / 20


async def test_control_endpoint_stats_and_reset_over_http(srv: FakeLLMServer, http: httpx.AsyncClient) -> None:
    r = await http.post(
        srv.url + "/_control/p1",
        json={"default_reply": "from control", "rules": [{"match": "x", "reply": "y"}], "latency_ms": 1},
    )
    assert r.status_code == 200 and r.json()["default_reply"] == "from control"
    assert (await http.get(srv.url + "/_control/p1")).json()["rules"] == [
        {"match": "x", "reply": "y", "scope": "last_user"}
    ]
    bad = await http.post(srv.url + "/_control/p1", json={"eror": "http_500"})
    assert bad.status_code == 400 and "eror" in bad.json()["error"]["message"]
    bad = await http.post(srv.url + "/_control/p1", json={"error": "explode"})
    assert bad.status_code == 400
    r = await http.post(srv.base_url("p1") + "/chat/completions", json={"model": "m", "messages": MSGS})
    assert r.json()["choices"][0]["message"]["content"] == "from control"
    stats = (await http.get(srv.url + "/_stats")).json()
    assert stats["total_requests"] == 1 and stats["providers"]["p1"]["by_api"]["openai"] == 1
    assert srv.requests("p1")[0]["body"]["messages"] == MSGS
    await http.post(srv.url + "/_reset")
    assert (await http.get(srv.url + "/_stats")).json()["total_requests"] == 0


async def test_keep_alive_connection_serves_many_requests(srv: FakeLLMServer) -> None:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as client:
        for _ in range(5):
            r = await client.post(srv.base_url("k") + "/chat/completions", json={"model": "m", "messages": MSGS})
            assert r.status_code == 200
    assert srv.stats("k")["requests"] == 5


def test_command_line_server_with_config_file(tmp_path: Path) -> None:
    config = tmp_path / "fake.json"
    config.write_text(json.dumps({"providers": {"cli": {"default_reply": "cli says hi"}}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "masterx_runtime.testing.fake_llm", "--port", "0", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        r = httpx.post(f"{url}/p/cli/v1/chat/completions", json={"model": "m", "messages": MSGS}, timeout=5)
        assert r.json()["choices"][0]["message"]["content"] == "cli says hi"
    finally:
        proc.terminate()
        proc.wait(5)
    assert proc.returncode == 0


async def test_scripted_correctness_is_right_with_the_given_probability(
    srv: FakeLLMServer, http: httpx.AsyncClient
) -> None:
    rule = ReplyRule(
        match="2 \\+ 2", reply="Final answer: 4", correct_probability=0.3, wrong_replies=["Final answer: 5"]
    )
    srv.configure("coin", ProviderBehavior(rules=[rule], seed=7))
    url = srv.base_url("coin") + "/chat/completions"
    replies = []
    for _ in range(200):
        resp = await http.post(url, json={"model": "m", "messages": MSGS})
        replies.append(resp.json()["choices"][0]["message"]["content"])
    right = replies.count("Final answer: 4")
    assert right + replies.count("Final answer: 5") == 200
    assert 40 <= right <= 80  # 60 expected; +-3 standard deviations is 41-79
    with pytest.raises(ValueError, match="wrong_replies"):
        ReplyRule(match="x", reply="y", correct_probability=0.5)
