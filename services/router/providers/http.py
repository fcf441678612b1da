"""Shared HTTP plumbing for the remote adapters: one pooled aiohttp session, SSE, error mapping.

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
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp

from services.router.providers import http_spans
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
#: Idle pooled connections are closed after this long (httpx's default; servers often close at 5 s too).
KEEPALIVE_SECONDS = 5.0
#: The connection broke under a request (as opposed to: it could not be made, or timed out).
_DROPPED = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientConnectionResetError,
    aiohttp.ClientOSError,
)


class HttpClient:
    """The remote providers' pooled HTTP client: one aiohttp session, keep-alive, a connection limit.

    No proxies from the environment, no redirects. The session is made on first use, inside the
    running event loop (aiohttp needs one). One pool serves every request: aiohttp hands out an
    idle connection without scanning the pool, so (unlike httpcore) many open streams cost
    nothing per request and the pool needs no sharding.
    """

    def __init__(self, connect_timeout: float = 5.0, max_connections: int = 1000) -> None:
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=60.0),
                trust_env=False,
                trace_configs=http_spans.trace_configs(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def make_http_client(connect_timeout: float = 5.0, max_connections: int = 1000) -> HttpClient:
    """A pooled client (keep-alive across requests); close it with ``aclose()``."""
    return HttpClient(connect_timeout, max_connections)


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


async def iter_sse_batches(chunks: AsyncIterable[bytes]) -> AsyncIterator[list[SseEvent]]:
    """Parse a text/event-stream body; yields the complete events of each network read together.

    ``chunks`` is the body as it arrives (``response.content.iter_any()``: whatever has been
    received when the parser asks). Events that arrive in one read are handed over as one batch,
    so a busy router forwards them to its client as one message instead of many (no added
    latency: nothing waits).
    """
    buffer = b""
    async for chunk in chunks:
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

    def __init__(self, spec: ProviderSpec, client: HttpClient, environ: dict[str, str] | None = None) -> None:
        super().__init__(spec)
        self._client = client
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

    def _headers(self) -> dict[str, str]:
        return {"content-type": "application/json", **self.spec.headers, **self._auth_headers()}

    def _scrub(self, text: str) -> str:
        return redact(text, [self._api_key])[:_MAX_ERROR_TEXT]

    def _post(
        self, request: ChatRequest, stream: bool, timeout: float
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """The request as an ``async with`` context (leaving it returns or closes the connection).

        Timeouts as httpx had them: ``timeout`` for getting a pooled connection or connecting
        (connecting itself at most the client's connect timeout) and for each read; no total.
        """
        body = json.dumps(self._body(request, stream), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return self._client.session.post(
            self._url(stream),
            data=body.encode(),
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=timeout,
                sock_connect=min(self._client.connect_timeout or timeout, timeout),
                sock_read=timeout,
            ),
            allow_redirects=False,
        )

    async def _raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        if response.status < 400:
            return
        body = await response.read()
        try:
            message = self._error_message(json.loads(body))
        except ValueError:
            message = ""
        message = message or body.decode("utf-8", "replace") or response.reason or ""
        retry_after = None
        with contextlib.suppress(ValueError):
            retry_after = float(response.headers.get("retry-after", ""))
        raise error_for_status(
            self.name, response.status, f"HTTP {response.status}: {self._scrub(message)}", retry_after
        )

    @contextlib.contextmanager
    def _mapped_errors(self, started_stream: list[bool]) -> Iterator[None]:
        try:
            yield
        except ProviderError:
            raise
        except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors
            raise ProviderTimeout(self.name, f"timed out ({type(exc).__name__})") from None
        except aiohttp.ClientConnectorError as exc:  # could not connect (refused, DNS): nothing was sent
            raise ServerError(self.name, f"{type(exc).__name__}: {self._scrub(str(exc))}") from None
        except _DROPPED as exc:
            if started_stream[0]:
                raise StreamBroken(self.name, f"stream broken: {self._scrub(str(exc)) or type(exc).__name__}") from None
            raise ServerError(self.name, f"connection dropped: {self._scrub(str(exc)) or type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            raise ServerError(self.name, f"{type(exc).__name__}: {self._scrub(str(exc))}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ServerError(self.name, f"malformed response: {type(exc).__name__}: {self._scrub(str(exc))}") from None

    async def complete(self, request: ChatRequest, timeout: float) -> Completion:
        started = time.perf_counter()
        with self._mapped_errors([False]):
            async with self._post(request, stream=False, timeout=timeout) as response:
                await self._raise_for_status(response)
                body = await response.read()
            text, usage, finish, model = self._parse_full(json.loads(body), request)
        latency = (time.perf_counter() - started) * 1000
        return Completion(text, usage, finish, model or self.spec.model, latency, latency)

    async def stream(self, request: ChatRequest, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        started_stream = [False]
        parser = self._stream_parser(request)
        with self._mapped_errors(started_stream):
            # Leaving this block before the body's end (cancelled, closed by the consumer, an
            # error) closes the connection, so the provider sees the request abandoned at once.
            async with self._post(request, stream=True, timeout=timeout) as response:
                await self._raise_for_status(response)
                started_stream[0] = True
                async for events in iter_sse_batches(response.content.iter_any()):
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
