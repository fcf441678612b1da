"""Provider adapters through real HTTP against the fake server, plus discovery from file/env."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from masterx_runtime.config import ConfigError
from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior, ReplyRule
from masterx_runtime.testing.otlp_receiver import OtlpReceiver
from services.router.config import RouterSettings
from services.router.providers import (
    AuthError,
    BadRequest,
    ChatRequest,
    Message,
    ProviderTimeout,
    RateLimited,
    ServerError,
    StreamBroken,
    StreamDelta,
    StreamEnd,
)
from services.router.providers.base import Provider, ProviderSpec, redact
from services.router.providers.http import HttpClient, make_http_client
from services.router.providers.registry import build_provider, load_specs

KINDS = ["openai", "anthropic", "gemini"]
REQ = ChatRequest(
    (Message("system", "You are a tutor."), Message("user", "What is 2 + 2?")), max_tokens=64, temperature=0.2
)
KEY = "sk-test-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def srv() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = make_http_client(connect_timeout=2)
    yield c
    await c.aclose()


def provider(srv: FakeLLMServer, client: HttpClient, name: str, kind: str, **extra: Any) -> Provider:
    spec = ProviderSpec(
        name=name, kind=kind, model=f"{name}-m", base_url=srv.base_url(name, kind), api_key_env="FAKE_KEY", **extra
    )  # type: ignore[arg-type]
    return build_provider(spec, client, {"FAKE_KEY": KEY})


async def collect(p: Provider, req: ChatRequest = REQ, timeout: float = 5) -> tuple[str, StreamEnd]:
    parts, end = [], None
    async for event in p.stream(req, timeout):
        if isinstance(event, StreamDelta):
            parts.append(event.text)
        else:
            assert isinstance(event, StreamEnd)
            end = event
    assert end is not None
    return "".join(parts), end


@pytest.mark.parametrize("kind", KINDS)
async def test_complete_and_stream_with_reported_usage(srv: FakeLLMServer, client: HttpClient, kind: str) -> None:
    srv.configure(
        "p", ProviderBehavior(api_key=KEY, rules=[ReplyRule(match=r"2 \+ 2", reply="It is 4, because 2 and 2 make 4.")])
    )
    p = provider(srv, client, "p", kind)
    done = await p.complete(REQ, 5)
    assert done.text == "It is 4, because 2 and 2 make 4."
    assert done.usage.output_tokens == 9 and not done.usage.estimated
    assert done.usage.input_tokens == 11  # "You are a tutor." + "What is 2 + 2?" as the fake counts
    assert done.finish_reason == "stop"
    text, end = await collect(p)
    assert text == done.text
    assert (end.usage.input_tokens, end.usage.output_tokens, end.usage.estimated) == (11, 9, False)
    body = srv.requests("p")[-1]["body"]
    if kind == "openai":
        assert body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 64
        assert body["messages"][0] == {"role": "system", "content": "You are a tutor."}
    elif kind == "anthropic":
        assert body["system"] == "You are a tutor." and body["max_tokens"] == 64
        assert body["messages"] == [{"role": "user", "content": "What is 2 + 2?"}]
    else:
        assert body["systemInstruction"] == {"parts": [{"text": "You are a tutor."}]}
        assert body["generationConfig"]["maxOutputTokens"] == 64


@pytest.mark.parametrize("kind", KINDS)
async def test_missing_usage_is_estimated(srv: FakeLLMServer, client: HttpClient, kind: str) -> None:
    srv.configure("nu", report_usage=False, default_reply="one two three")
    p = provider(srv, client, "nu", kind)
    done = await p.complete(REQ, 5)
    assert done.usage.estimated and done.usage.output_tokens == 3 and done.usage.input_tokens > 0
    _, end = await collect(p)
    assert end.usage.estimated and end.usage.output_tokens == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_max_tokens_truncation_reports_length(srv: FakeLLMServer, client: HttpClient, kind: str) -> None:
    srv.configure("len", default_reply="a b c d e f g h")
    p = provider(srv, client, "len", kind)
    done = await p.complete(dataclasses.replace(REQ, max_tokens=3), 5)
    assert done.text == "a b c" and done.finish_reason == "length"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("mode", "error"),
    [("http_500", ServerError), ("http_429", RateLimited), ("http_401", AuthError), ("http_400", BadRequest)],
)
async def test_http_errors_map_to_distinct_classes(
    srv: FakeLLMServer, client: HttpClient, kind: str, mode: str, error: type[Exception]
) -> None:
    srv.configure("e", error=mode)
    p = provider(srv, client, "e", kind)
    with pytest.raises(error) as info:
        await p.complete(REQ, 5)
    assert "injected" in str(info.value)
    if mode == "http_429":
        assert isinstance(info.value, RateLimited) and info.value.retry_after == 1.0
    with pytest.raises(error):
        await collect(p)


@pytest.mark.parametrize("kind", KINDS)
async def test_hang_becomes_timeout(srv: FakeLLMServer, client: HttpClient, kind: str) -> None:
    srv.configure("h", error="hang")
    p = provider(srv, client, "h", kind)
    with pytest.raises(ProviderTimeout):
        await p.complete(REQ, 0.2)
    with pytest.raises(ProviderTimeout):
        await collect(p, timeout=0.2)


@pytest.mark.parametrize("kind", KINDS)
async def test_broken_stream_raises_after_the_delivered_deltas(
    srv: FakeLLMServer, client: HttpClient, kind: str
) -> None:
    srv.configure("b", error="break_stream", break_after_chunks=2, default_reply="one two three four")
    p = provider(srv, client, "b", kind)
    seen: list[str] = []
    with pytest.raises(StreamBroken):
        async for event in p.stream(REQ, 5):
            if isinstance(event, StreamDelta):
                seen.append(event.text)
    assert "".join(seen) == "one two"
    with pytest.raises(ServerError):  # non-streaming: dropped before any response
        await p.complete(REQ, 5)


async def test_unreachable_provider_is_a_server_error(client: HttpClient) -> None:
    from masterx_runtime.testing.servers import free_port

    spec = ProviderSpec(name="gone", kind="openai", model="m", base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(ServerError):
        await build_provider(spec, client, {}).complete(REQ, 2)


@pytest.mark.parametrize("kind", KINDS)
async def test_abandoned_calls_close_the_upstream_request_at_once(
    srv: FakeLLMServer, client: HttpClient, kind: str
) -> None:
    """A stream closed after its first delta and a cancelled call both end the provider's request."""
    srv.configure("c", ttft_ms=10, tokens_per_second=5, default_reply="one two three four five six")
    p = provider(srv, client, "c", kind)
    events = p.stream(REQ, 30)
    assert isinstance(await anext(events), StreamDelta)
    await events.aclose()
    await _until(lambda: srv.stats("c")["in_flight"] == 0)
    srv.configure("c", error="hang", hang_seconds=30)
    call = asyncio.create_task(p.complete(REQ, 30))
    await _until(lambda: srv.stats("c")["in_flight"] == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _until(lambda: srv.stats("c")["in_flight"] == 0)


async def _until(check: Callable[[], bool], seconds: float = 1.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


async def test_a_body_that_is_not_json_is_a_malformed_response(client: HttpClient) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\nnot json!")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = ProviderSpec(name="junk", kind="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(ServerError, match="malformed response"):
            await build_provider(spec, client, {}).complete(REQ, 2)
    finally:
        server.close()
        await server.wait_closed()


async def test_key_is_sent_but_never_in_errors_or_logs(
    srv: FakeLLMServer, client: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    srv.configure("k", api_key="another-key-entirely")
    p = provider(srv, client, "k", "openai")
    with pytest.raises(AuthError) as info:
        await p.complete(REQ, 5)
    assert KEY not in str(info.value) and KEY[:8] not in str(info.value)
    assert KEY not in caplog.text
    assert redact(f"bad key {KEY} given", [KEY]) == "bad key <redacted> given"
    assert KEY not in repr(p.spec)


def test_provider_calls_are_client_spans_when_tracing_is_on() -> None:
    """With tracing on, each provider request is a CLIENT span under the caller's span (run in a
    child process: tracing is process-wide)."""
    code = (
        "import asyncio\n"
        "from opentelemetry import trace\n"
        "from masterx_runtime import tracing\n"
        "from masterx_runtime.testing.fake_llm import FakeLLMServer\n"
        "from services.router.providers.base import ChatRequest, Message, ProviderSpec\n"
        "from services.router.providers.http import make_http_client\n"
        "from services.router.providers.registry import build_provider\n"
        "assert tracing.setup('router')\n"
        "async def main():\n"
        "    async with FakeLLMServer() as srv:\n"
        "        client = make_http_client()\n"
        "        spec = ProviderSpec(name='t', kind='openai', model='m', base_url=srv.base_url('t', 'openai'))\n"
        "        with trace.get_tracer('test').start_as_current_span('caller'):\n"
        "            await build_provider(spec, client, {}).complete(ChatRequest((Message('user', 'hi'),)), 5)\n"
        "        await client.aclose()\n"
        "asyncio.run(main())\n"
        "tracing.shutdown()\n"
    )
    with OtlpReceiver() as rx:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
        )
        assert proc.returncode == 0, proc.stderr
        spans = rx.wait_for(lambda got: any(s.name == "POST" for s in got))
    caller = next(s for s in spans if s.name == "caller")
    call = next(s for s in spans if s.name == "POST")
    assert call.kind == 3 and call.parent_span_id == caller.span_id and call.trace_id == caller.trace_id  # 3: CLIENT
    assert (
        str(call.attributes["url.full"]).startswith("http://127.0.0.1")
        and call.attributes["http.response.status_code"] == 200
    )


# --------------------------------------------------------------------------- discovery


def settings(**kw: object) -> RouterSettings:
    return dataclasses.replace(RouterSettings(), **kw)  # type: ignore[arg-type]


def test_providers_file_yaml_and_inline_json(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(
        """
providers:
  - name: fast
    kind: openai
    base_url: http://127.0.0.1:1/p/fast/v1
    model: fast-m
    api_key_env: FAST_KEY
    input_price_per_mtok: 0.1
    output_price_per_mtok: 0.4
    context_window: 8000
    max_output_tokens: 500
    rpm: 60
    quality: {default: 70, coding: 85}
  - name: off
    kind: openai
    base_url: http://x/v1
    model: m
    enabled: false
"""
    )
    inline = json.dumps([{"name": "claude", "kind": "anthropic", "base_url": "http://127.0.0.1:1/p/c", "model": "c"}])
    specs = load_specs(settings(providers_file=str(path), providers_json=inline, local_provider="auto"), {})
    assert [s.name for s in specs] == ["fast", "claude"]  # no local: something is configured
    fast = specs[0]
    assert fast.quality == {"default": 70.0, "coding": 85.0} and fast.rpm == 60 and fast.max_output_tokens == 500


def test_env_keys_add_providers_and_local_follows_the_setting() -> None:
    specs = load_specs(settings(local_provider="auto"), {"GROQ_API_KEY": "g", "GEMINI_API_KEY": "x"})
    assert [s.name for s in specs] == ["gemini", "groq"]
    assert [s.name for s in load_specs(settings(local_provider="auto"), {})] == ["local"]
    assert [s.name for s in load_specs(settings(local_provider="on"), {"OPENAI_API_KEY": "k"})] == ["openai", "local"]
    with pytest.raises(ConfigError, match="no providers"):
        load_specs(settings(local_provider="off"), {})
    specs = load_specs(settings(discover_env_keys=False, local_provider="auto"), {"OPENAI_API_KEY": "k"})
    assert [s.name for s in specs] == ["local"]


def test_bad_providers_file_lists_every_problem(tmp_path: Path) -> None:
    doc = [
        {"name": "a", "kind": "openai", "model": "m"},
        {"name": "b", "kind": "carrier-pigeon", "base_url": "x", "model": "m", "api_key": "sk-secret", "colour": 1},
        {"name": "c", "kind": "openai", "base_url": "x", "model": "m", "input_price_per_mtok": -1},
        {"name": "c", "kind": "openai", "base_url": "x", "model": "m"},
        {"name": "d", "kind": "openai", "base_url": "x", "model": "m", "quality": {"cooking": 90}},
    ]
    with pytest.raises(ConfigError) as info:
        load_specs(settings(providers_json=json.dumps(doc)), {})
    text = str(info.value)
    for needle in (
        "base_url is required",
        "carrier-pigeon",
        "api_key_env",
        "colour",
        "input_price_per_mtok",
        "used twice",
    ):
        assert needle in text
    assert "sk-secret" not in text
    with pytest.raises(ConfigError, match="no such file"):
        load_specs(settings(providers_file=str(tmp_path / "missing.yaml")), {})
