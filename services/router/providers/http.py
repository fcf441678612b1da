"""Shared HTTP plumbing for the remote adapters: one pooled httpx client, SSE, error mapping.

Subclasses describe their wire format (URL, headers, body, how to read a full answer and
stream events); this class owns the transport concerns that must be the same everywhere:
timeouts mapped to ProviderTimeout, dropped connections to StreamBroken/ServerError, HTTP
statuses to the error classes, and API keys scrubbed from every message.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from services.router.providers.base import (
    ChatRequest,
    Completion,
    Provider,
    ProviderError,
    ProviderSpec,
    ProviderTimeout,
    ServerError,
    StreamBroken,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    Usage,
    error_for_status,
    estimate_input_tokens,
    estimate_tokens,
    redact,
)

_MAX_ERROR_TEXT = 300


def make_http_client(connect_timeout: float = 5.0, max_connections: int = 1000) -> httpx.AsyncClient:
    """A pooled client (keep-alive across requests)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=connect_timeout),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 2),
        follow_redirects=False,
        trust_env=False,
    )


class ClientShards:
    """Several pooled clients used in turn.

    httpcore scans its whole pool for every request it places (``is_idle``/``has_expired`` on
    each connection), which costs about a millisecond of CPU per request once a couple of
    hundred streams are open; a few smaller pools keep that scan short.
    """

    def __init__(self, shards: int = 8, connect_timeout: float = 5.0, max_connections: int = 1000) -> None:
        per_shard = max(max_connections // shards, 16)
        self.clients = [make_http_client(connect_timeout, per_shard) for _ in range(shards)]
        self._next = 0

    def pick(self) -> httpx.AsyncClient:
        self._next = (self._next + 1) % len(self.clients)
        return self.clients[self._next]

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


@dataclass
class SseEvent:
    event: str
    data: str


def parse_sse_block(block: bytes) -> SseEvent | None:
    """One event (the lines between blank lines) -> SseEvent; comments and empty data -> None."""
    event, data = "", list[str]()
    for raw in block.split(b"\n"):
        line = raw.decode("utf-8", "replace")
        if not line or line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            event = value
        elif key == "data":
            data.append(value)
    return SseEvent(event or "message", "\n".join(data)) if data else None


async def iter_sse_batches(response: httpx.Response) -> AsyncIterator[list[SseEvent]]:
    """Parse a text/event-stream body; yields the complete events of each network read together.

    Events that arrive in one read are handed over as one batch, so a busy router forwards
    them to its client as one message instead of many (no added latency: nothing waits).
    """
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if b"\r" in buffer:
            keep_cr = buffer.endswith(b"\r")  # a CRLF split across reads
            buffer = buffer.replace(b"\r\n", b"\n")
            if keep_cr:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r", b"\n")
            if keep_cr:
                buffer += b"\r"
        if b"\n\n" not in buffer:
            continue
        *blocks, buffer = buffer.split(b"\n\n")
        events = [e for e in map(parse_sse_block, blocks) if e is not None]
        if events:
            yield events
    tail = parse_sse_block(buffer.replace(b"\r", b"\n")) if buffer.strip() else None
    if tail is not None:
        yield [tail]


class HttpProvider(Provider, abc.ABC):
    """A provider reached over HTTP with JSON bodies and SSE streams."""

    def __init__(
        self, spec: ProviderSpec, client: httpx.AsyncClient | ClientShards, environ: dict[str, str] | None = None
    ) -> None:
        super().__init__(spec)
        self._shards = client if isinstance(client, ClientShards) else None
        self._client = client.clients[0] if isinstance(client, ClientShards) else client
        env = os.environ if environ is None else environ
        self._api_key = env.get(spec.api_key_env, "") if spec.api_key_env else ""

    # --- what subclasses define

    @abc.abstractmethod
    def _url(self, stream: bool) -> str: ...

    @abc.abstractmethod
    def _auth_headers(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _parse_full(self, data: Any, request: ChatRequest) -> tuple[str, Usage, str, str]:
        """(text, usage, finish_reason, model) of a non-streaming answer."""

    @abc.abstractmethod
    def _stream_parser(self, request: ChatRequest) -> StreamParser: ...

    def _error_message(self, data: Any) -> str:
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return err["message"]
            if isinstance(err, str):
                return err
        return ""

    # --- shared transport

    def _pick(self) -> httpx.AsyncClient:
        return self._shards.pick() if self._shards is not None else self._client

    def _headers(self) -> dict[str, str]:
        return {"content-type": "application/json", **self.spec.headers, **self._auth_headers()}

    def _scrub(self, text: str) -> str:
        return redact(text, [self._api_key])[:_MAX_ERROR_TEXT]

    def _timeout(self, timeout: float) -> httpx.Timeout:
        connect = min(self._client.timeout.connect or timeout, timeout)
        return httpx.Timeout(timeout, connect=connect)

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        body = await response.aread()
        try:
            message = self._error_message(json.loads(body))
        except ValueError:
            message = ""
        message = message or body.decode("utf-8", "replace") or response.reason_phrase
        retry_after = None
        with contextlib.suppress(ValueError):
            retry_after = float(response.headers.get("retry-after", ""))
        raise error_for_status(
            self.name, response.status_code, f"HTTP {response.status_code}: {self._scrub(message)}", retry_after
        )

    @contextlib.contextmanager
    def _mapped_errors(self, started_stream: list[bool]) -> Iterator[None]:
        try:
            yield
        except ProviderError:
            raise
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(self.name, f"timed out ({type(exc).__name__})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if started_stream[0]:
                raise StreamBroken(self.name, f"stream broken: {self._scrub(str(exc)) or type(exc).__name__}") from None
            raise ServerError(self.name, f"connection dropped: {self._scrub(str(exc)) or type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise ServerError(self.name, f"{type(exc).__name__}: {self._scrub(str(exc))}") from None
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ServerError(self.name, f"malformed response: {type(exc).__name__}: {self._scrub(str(exc))}") from None

    async def complete(self, request: ChatRequest, timeout: float) -> Completion:
        started = time.perf_counter()
        with self._mapped_errors([False]):
            response = await self._pick().post(
                self._url(stream=False),
                json=self._body(request, stream=False),
                headers=self._headers(),
                timeout=self._timeout(timeout),
            )
            await self._raise_for_status(response)
            text, usage, finish, model = self._parse_full(response.json(), request)
        latency = (time.perf_counter() - started) * 1000
        return Completion(text, usage, finish, model or self.spec.model, latency, latency)

    async def stream(self, request: ChatRequest, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        started_stream = [False]
        parser = self._stream_parser(request)
        with self._mapped_errors(started_stream):
            async with self._pick().stream(
                "POST",
                self._url(stream=True),
                json=self._body(request, stream=True),
                headers=self._headers(),
                timeout=self._timeout(timeout),
            ) as response:
                await self._raise_for_status(response)
                started_stream[0] = True
                async for events in iter_sse_batches(response):
                    if parser.finished:
                        continue  # read to the end of the body so the connection goes back to the pool
                    texts = []
                    for event in events:
                        texts += [d.text for d in parser.feed(event)]
                        if parser.finished:
                            break
                    if texts:
                        yield StreamDelta("".join(texts))
        if not parser.finished:
            raise StreamBroken(self.name, "stream ended without its end marker")
        yield parser.end(self.spec.model)


class StreamParser(abc.ABC):
    """Turns one provider's SSE events into deltas, collecting usage and the finish reason."""

    def __init__(self, provider: str, request: ChatRequest) -> None:
        self.provider = provider
        self.request = request
        self.finished = False
        self.finish_reason = "stop"
        self.model = ""
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.text_parts: list[str] = []

    @abc.abstractmethod
    def feed(self, event: SseEvent) -> list[StreamDelta]: ...

    def delta(self, text: str) -> list[StreamDelta]:
        if not text:
            return []
        self.text_parts.append(text)
        return [StreamDelta(text)]

    def end(self, default_model: str) -> StreamEnd:
        estimated = self.input_tokens is None or self.output_tokens is None
        usage = Usage(
            self.input_tokens if self.input_tokens is not None else estimate_input_tokens(self.request),
            self.output_tokens if self.output_tokens is not None else estimate_tokens("".join(self.text_parts)),
            estimated,
        )
        return StreamEnd(usage, self.finish_reason, self.model or default_model)

    def load(self, event: SseEvent) -> Any:
        try:
            return json.loads(event.data)
        except ValueError:
            raise ServerError(self.provider, "malformed stream event (not JSON)") from None
