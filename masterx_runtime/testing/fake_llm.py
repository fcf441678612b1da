"""A real HTTP server on loopback that speaks the OpenAI, Anthropic and Gemini wire formats.

Tests (and benchmarks) point the router's providers at it instead of the real APIs, so the
adapters are exercised through real HTTP and real SSE. One server plays many providers: each
provider is a path prefix ``/p/<name>/...``, and each one's behaviour (latency, time to first
token, tokens per second, injected failures with a seeded error rate, scripted replies) is set
with :meth:`FakeLLMServer.configure` in-process or ``POST /_control/<name>`` over HTTP.

Endpoints (``<p>`` = ``/p/<name>``; a path without ``/p/<name>`` is provider ``default``):

* ``POST <p>/v1/chat/completions``  OpenAI chat completions (``stream``, ``stream_options.include_usage``)
* ``POST <p>/v1/messages``          Anthropic Messages (``stream`` with its SSE event types)
* ``POST <p>/v1beta/models/<model>:generateContent`` and ``:streamGenerateContent[?alt=sse]``  Gemini
* ``GET  <p>/v1/models``            OpenAI model list
* ``GET  /_stats``, ``POST /_reset``, ``GET|POST|DELETE /_control/<name>``, ``GET /_health``

The server is a small asyncio HTTP/1.1 implementation (keep-alive, Content-Length and chunked
bodies) running on its own event loop in a background thread, so it is fast, has no
framework between it and the socket, and can cut a connection mid-stream the way a failing
provider does. Token counts are deterministic: input tokens are words and punctuation marks of
every message, output tokens are the whitespace-separated pieces of the reply (one per chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import json
import random
import re
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ERROR_MODES = ("none", "http_500", "http_503", "http_429", "http_401", "http_400", "hang", "break_stream")
_MODE_ALIASES = {"timeout": "hang", "break_stream_after_n_chunks": "break_stream", "": "none"}
_INPUT_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_OUTPUT_PIECE_RE = re.compile(r"\s*\S+")
_PROVIDER_PATH_RE = re.compile(r"^/p/([A-Za-z0-9_.\-]+)(/.*)$")
_GEMINI_PATH_RE = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)$")
_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class ReplyRule:
    """Answer ``reply`` when regex ``match`` is found (re.search, case-insensitive).

    ``scope`` is ``"last_user"`` (the last user message) or ``"prompt"`` (every message, system
    included, joined by newlines). Replies may use ``{provider}``, ``{model}``, ``{last_user}``.

    Scripted correctness: with ``correct_probability`` set, each matching request answers
    ``reply`` with that probability and otherwise one of ``wrong_replies`` (uniformly), drawn
    from the provider's seeded generator - a model that is right with a given probability per
    step, independently per sample.
    """

    match: str
    reply: str
    scope: str = "last_user"
    correct_probability: float | None = None
    wrong_replies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.scope not in ("last_user", "prompt"):
            raise ValueError(f"ReplyRule.scope must be 'last_user' or 'prompt', not {self.scope!r}")
        re.compile(self.match)
        if self.correct_probability is not None:
            if not 0.0 <= self.correct_probability <= 1.0:
                raise ValueError("ReplyRule.correct_probability must be in [0, 1]")
            if self.correct_probability < 1.0 and not self.wrong_replies:
                raise ValueError("ReplyRule.correct_probability below 1 needs wrong_replies")

    def pick(self, rng: random.Random) -> str:
        """The reply for one request (``rng`` draws the scripted correctness)."""
        if self.correct_probability is None or rng.random() < self.correct_probability:
            return self.reply
        return self.wrong_replies[rng.randrange(len(self.wrong_replies))]


@dataclass
class ProviderBehavior:
    """How one fake provider behaves. Every field has a harmless default.

    Timing: the response (status line and headers) starts after ``latency_ms``; the first
    token follows ``ttft_ms`` later; further tokens come at ``tokens_per_second`` (0 = all at
    once). A non-streaming response is sent when the whole answer would have been generated.

    Failures: when ``error`` is not ``"none"``, each request fails with probability
    ``error_rate`` (drawn from a ``random.Random(seed)`` per provider, so runs repeat):
    ``http_500``/``http_503``/``http_429``/``http_401``/``http_400`` answer that status with
    the provider's error body (429 carries ``retry-after``); ``hang`` (alias ``timeout``) never
    answers until the client goes away (or ``hang_seconds``); ``break_stream`` (alias
    ``break_stream_after_n_chunks``) sends ``break_after_chunks`` content chunks and then
    drops the connection (a non-streaming request is dropped before any response).
    """

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0
    error: str = "none"
    error_rate: float = 1.0
    break_after_chunks: int = 0
    hang_seconds: float = 3600.0
    seed: int = 0
    rules: list[ReplyRule] = field(default_factory=list)
    default_reply: str = "This is a reply from {provider}."
    #: When set, requests must carry exactly this key (Bearer / x-api-key / x-goog-api-key / ?key=).
    api_key: str | None = None
    #: Model name echoed in responses; None echoes the requested model.
    model: str | None = None
    #: False leaves usage out of responses (the adapter must estimate it).
    report_usage: bool = True

    def __post_init__(self) -> None:
        self.error = _MODE_ALIASES.get(self.error, self.error)
        if self.error not in ERROR_MODES:
            raise ValueError(f"unknown error mode {self.error!r}; use one of {', '.join(ERROR_MODES)}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be in [0, 1]")
        for name in ("latency_ms", "ttft_ms", "tokens_per_second", "hang_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.break_after_chunks < 0:
            raise ValueError("break_after_chunks must be >= 0")
        self.rules = [r if isinstance(r, ReplyRule) else ReplyRule(**r) for r in self.rules]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProviderBehavior:
        """Build from JSON (unknown keys are an error, so typos do not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for rule in data["rules"]:  # scripted-correctness fields only when used (older clients)
            if rule["correct_probability"] is None:
                del rule["correct_probability"]
            if not rule["wrong_replies"]:
                del rule["wrong_replies"]
        return data


@dataclass
class _Prompt:
    """A request reduced to what the fake needs: texts, limits and streaming flags."""

    api: str
    model: str
    system: str
    messages: list[tuple[str, str]]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    stop: list[str]
    #: Gemini streamGenerateContent without alt=sse answers one JSON array.
    json_array: bool = False

    @property
    def last_user(self) -> str:
        for role, text in reversed(self.messages):
            if role == "user":
                return text
        return ""

    @property
    def whole(self) -> str:
        return "\n".join([self.system, *(t for _, t in self.messages)]).strip()

    def input_tokens(self) -> int:
        return len(_INPUT_TOKEN_RE.findall(self.whole))


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ClientGone(Exception):
    """The client closed the connection."""


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class _Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        parts = urlsplit(target)
        self.path = unquote(parts.path)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise _HttpError(400, f"request body is not valid JSON: {exc}") from None


class _Response:
    """Writes one HTTP/1.1 response: either a full body or a chunked stream."""

    def __init__(self, writer: asyncio.StreamWriter, keep_alive: bool) -> None:
        self.writer = writer
        self.keep_alive = keep_alive
        self.started = False
        self.aborted = False

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        headers = {**headers, "connection": "keep-alive" if self.keep_alive else "close"}
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        head = self._head(status, {"content-type": content_type, "content-length": str(len(body)), **headers})
        self.started = True
        self.writer.write(head + body)
        await self.writer.drain()

    async def send_json(self, status: int, obj: Any, **headers: str) -> None:
        await self.send(status, json.dumps(obj).encode(), **headers)

    async def start_stream(self, content_type: str = "text/event-stream") -> None:
        head = self._head(
            200, {"content-type": content_type, "transfer-encoding": "chunked", "cache-control": "no-cache"}
        )
        self.started = True
        self.writer.write(head)
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        if data:
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self.writer.drain()

    async def end_stream(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def abort(self) -> None:
        """Drop the connection at once (no terminating chunk): what a crashing provider does."""
        self.aborted = True
        self.keep_alive = False
        self.writer.transport.abort()


class _ProviderState:
    def __init__(self, behavior: ProviderBehavior) -> None:
        self.behavior = behavior
        self.rng = random.Random(behavior.seed)


def _empty_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "by_api": {"openai": 0, "anthropic": 0, "gemini": 0},
        "streams": 0,
        "completed": 0,
        "errors": {},
        "broken_streams": 0,
        "hung": 0,
        "in_flight": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }


Handler = Callable[[str, _Request, _Response], Awaitable[None]]


class FakeLLMServer:
    """The shared test LLM server. Use ``async with FakeLLMServer() as srv`` or ``with``.

    ``behaviors`` presets per-provider behaviour; providers never configured answer with the
    default :class:`ProviderBehavior`. The server runs on its own event loop in a daemon
    thread, so it keeps answering even while the caller's loop is busy.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviors: dict[str, ProviderBehavior] | None = None,
        *,
        request_log_size: int = 50,
    ) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._providers: dict[str, _ProviderState] = {}
        self._stats: dict[str, dict[str, Any]] = {}
        self._requests: dict[str, deque[dict[str, Any]]] = {}
        self._request_log_size = request_log_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop_event: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()
        for name, behavior in (behaviors or {}).items():
            self.configure(name, behavior)

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        """``http://host:port`` (available once started)."""
        if not self.port:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    def base_url(self, name: str, kind: str = "openai") -> str:
        """The base URL a provider of ``kind`` uses to reach fake provider ``name``.

        openai: ``.../p/<name>/v1`` (the client posts ``/chat/completions``); anthropic:
        ``.../p/<name>`` (posts ``/v1/messages``); gemini: ``.../p/<name>/v1beta``.
        """
        suffix = {"openai": "/v1", "anthropic": "", "gemini": "/v1beta"}
        if kind not in suffix:
            raise ValueError(f"kind must be one of {', '.join(suffix)}")
        return f"{self.url}/p/{name}{suffix[kind]}"

    def provider_entry(self, name: str, kind: str = "openai", model: str | None = None, **extra: Any) -> dict[str, Any]:
        """One entry for the router's providers file pointing at fake provider ``name``."""
        return {
            "name": name,
            "kind": kind,
            "base_url": self.base_url(name, kind),
            "model": model or f"{name}-model",
            **extra,
        }

    def configure(self, name: str, behavior: ProviderBehavior | None = None, **fields: Any) -> ProviderBehavior:
        """Set provider ``name``'s behaviour (a fresh seeded RNG too). Thread-safe.

        Pass a :class:`ProviderBehavior`, or keyword fields applied over the default.
        """
        if behavior is None:
            behavior = ProviderBehavior.from_dict(fields)
        elif fields:
            behavior = dataclasses.replace(behavior, **fields)
        behavior = copy.deepcopy(behavior)
        with self._lock:
            self._providers[name] = _ProviderState(behavior)
        return behavior

    def behavior(self, name: str) -> ProviderBehavior:
        with self._lock:
            state = self._providers.get(name)
            return copy.deepcopy(state.behavior) if state else ProviderBehavior()

    def reset(self, name: str | None = None) -> None:
        """Forget behaviour and stats (of one provider, or all)."""
        with self._lock:
            if name is None:
                self._providers.clear()
                self._stats.clear()
                self._requests.clear()
            else:
                self._providers.pop(name, None)
                self._stats.pop(name, None)
                self._requests.pop(name, None)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()
            self._requests.clear()

    def stats(self, name: str | None = None) -> dict[str, Any]:
        """Counters of one provider (zeros if never called), or ``{name: counters}`` for all."""
        with self._lock:
            if name is not None:
                return copy.deepcopy(self._stats.get(name, _empty_stats()))
            return copy.deepcopy(self._stats)

    def requests(self, name: str) -> list[dict[str, Any]]:
        """The last requests provider ``name`` received: api, path, stream, JSON body."""
        with self._lock:
            return copy.deepcopy(list(self._requests.get(name, ())))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeLLMServer:
        """Start the server thread and wait until it listens."""
        if self._thread is not None:
            return self
        self._ready.clear()
        self._thread = threading.Thread(target=self._run_thread, name="fake-llm-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._startup_error is not None:
            raise RuntimeError(f"fake LLM server failed to start: {self._startup_error}")
        if not self._ready.is_set():
            raise RuntimeError("fake LLM server did not start within 10 s")
        return self

    def stop(self) -> None:
        """Stop listening, drop open connections and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._stop_event is not None:
            loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeLLMServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def _run_thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, backlog=1024, limit=_MAX_HEADER_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop_event.wait()
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    # ------------------------------------------------------------------ HTTP plumbing

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                keep_alive = request.headers.get("connection", "").lower() != "close"
                response = _Response(writer, keep_alive)
                try:
                    await self._dispatch(request, reader, response)
                except _HttpError as exc:
                    if not response.started:
                        await response.send_json(exc.status, {"error": {"message": exc.message, "code": exc.status}})
                except _ClientGone:
                    break
                if response.aborted or not response.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        method, target, _version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            pieces = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                pieces.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(pieces)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > _MAX_BODY_BYTES:
                return None
            body = await reader.readexactly(length)
        return _Request(method, target, headers, body)

    async def _dispatch(self, request: _Request, reader: asyncio.StreamReader, response: _Response) -> None:
        path = request.path
        if path == "/_health":
            await response.send_json(200, {"status": "ok"})
            return
        if path == "/_stats" and request.method == "GET":
            stats = self.stats()
            await response.send_json(
                200, {"providers": stats, "total_requests": sum(s["requests"] for s in stats.values())}
            )
            return
        if path == "/_reset" and request.method == "POST":
            self.reset_stats()
            await response.send_json(200, {"ok": True})
            return
        if path.startswith("/_control/"):
            await self._control(path.removeprefix("/_control/"), request, response)
            return
        m = _PROVIDER_PATH_RE.match(path)
        name, rest = (m.group(1), m.group(2)) if m else ("default", path)
        if rest.endswith("/models") and request.method == "GET":
            model = self.behavior(name).model or f"{name}-model"
            await response.send_json(200, {"object": "list", "data": [{"id": model, "object": "model"}]})
            return
        if request.method != "POST":
            raise _HttpError(405, f"{request.method} {path} is not supported")
        gm = _GEMINI_PATH_RE.search(rest)
        if rest.endswith("/chat/completions"):
            await self._provider_call(name, "openai", request, reader, response, None)
        elif rest.endswith("/messages"):
            await self._provider_call(name, "anthropic", request, reader, response, None)
        elif gm:
            await self._provider_call(name, "gemini", request, reader, response, gm)
        else:
            raise _HttpError(404, f"no such endpoint: {path}")

    async def _control(self, name: str, request: _Request, response: _Response) -> None:
        if not name:
            raise _HttpError(404, "provider name missing: /_control/<name>")
        if request.method == "GET":
            await response.send_json(200, self.behavior(name).to_dict())
        elif request.method == "POST":
            data = request.json()
            if not isinstance(data, dict):
                raise _HttpError(400, "behaviour must be a JSON object")
            try:
                behavior = self.configure(name, ProviderBehavior.from_dict(data))
            except (TypeError, ValueError) as exc:
                raise _HttpError(400, str(exc)) from None
            await response.send_json(200, behavior.to_dict())
        elif request.method == "DELETE":
            self.reset(name)
            await response.send_json(200, {"ok": True})
        else:
            raise _HttpError(405, f"{request.method} not supported on /_control")

    # ------------------------------------------------------------------ provider behaviour

    def _state(self, name: str) -> _ProviderState:
        with self._lock:
            state = self._providers.get(name)
            if state is None:
                state = self._providers[name] = _ProviderState(ProviderBehavior())
            return state

    def _count(self, name: str, **deltas: int) -> None:
        with self._lock:
            stats = self._stats.setdefault(name, _empty_stats())
            for key, delta in deltas.items():
                stats[key] += delta

    def _record(self, name: str, api: str, request: _Request, body: Any, stream: bool) -> None:
        with self._lock:
            stats = self._stats.setdefault(name, _empty_stats())
            stats["requests"] += 1
            stats["by_api"][api] += 1
            stats["streams"] += int(stream)
            stats["in_flight"] += 1
            log = self._requests.setdefault(name, deque(maxlen=self._request_log_size))
            log.append({"api": api, "path": request.path, "stream": stream, "body": body, "at": time.time()})

    def _count_error(self, name: str, mode: str) -> None:
        with self._lock:
            errors = self._stats.setdefault(name, _empty_stats())["errors"]
            errors[mode] = errors.get(mode, 0) + 1

    async def _provider_call(
        self,
        name: str,
        api: str,
        request: _Request,
        reader: asyncio.StreamReader,
        response: _Response,
        gemini_match: re.Match[str] | None,
    ) -> None:
        body = request.json()
        if not isinstance(body, dict):
            raise _HttpError(400, "request body must be a JSON object")
        prompt = _parse_prompt(api, body, request, gemini_match)
        self._record(name, api, request, body, prompt.stream)
        try:
            await self._answer(name, api, request, reader, response, prompt)
        finally:
            self._count(name, in_flight=-1)

    async def _answer(
        self, name: str, api: str, request: _Request, reader: asyncio.StreamReader, response: _Response, prompt: _Prompt
    ) -> None:
        state = self._state(name)
        b = state.behavior
        with self._lock:
            failing = b.error != "none" and state.rng.random() < b.error_rate
        if b.api_key is not None and _request_key(api, request) != b.api_key:
            self._count_error(name, "auth")
            await _send_error(response, api, 401, "invalid api key")
            return
        if b.latency_ms:
            await _sleep_or_gone(reader, b.latency_ms / 1000)
        if failing and b.error.startswith("http_"):
            status = int(b.error.removeprefix("http_"))
            self._count_error(name, b.error)
            await _send_error(response, api, status, f"injected {b.error} by the fake provider")
            return
        if failing and b.error == "hang":
            self._count_error(name, "hang")
            self._count(name, hung=1)
            await _sleep_or_gone(reader, b.hang_seconds)
            response.abort()
            return
        breaking = failing and b.error == "break_stream"
        if breaking:
            self._count_error(name, "break_stream")
        model = b.model or prompt.model or f"{name}-model"
        with self._lock:  # scripted correctness draws from the provider's seeded generator
            reply = _choose_reply(b, prompt, name, model, state.rng)
        pieces = _OUTPUT_PIECE_RE.findall(reply) or [""]
        finish = "stop"
        if prompt.max_tokens is not None and 0 < prompt.max_tokens < len(pieces):
            pieces, finish = pieces[: prompt.max_tokens], "length"
        usage = (prompt.input_tokens(), len(pieces) if pieces != [""] else 0)
        if not prompt.stream:
            if breaking:
                self._count(name, broken_streams=1)
                response.abort()
                return
            delay = b.ttft_ms / 1000 + (max(len(pieces) - 1, 0) / b.tokens_per_second if b.tokens_per_second else 0)
            if delay:
                await _sleep_or_gone(reader, delay)
            text = "".join(pieces)
            full = _FULL[api](model, text, finish, usage, b.report_usage)
            # counted before the answer goes out: a client that has read it must find it counted
            self._count(name, completed=1, input_tokens=usage[0], output_tokens=usage[1])
            await response.send_json(200, [full] if prompt.json_array else full)
            return
        await self._stream(name, api, reader, response, prompt, b, model, pieces, finish, usage, breaking)

    async def _stream(
        self,
        name: str,
        api: str,
        reader: asyncio.StreamReader,
        response: _Response,
        prompt: _Prompt,
        b: ProviderBehavior,
        model: str,
        pieces: list[str],
        finish: str,
        usage: tuple[int, int],
        breaking: bool,
    ) -> None:
        fmt = _STREAMS[api](model, usage, b.report_usage, prompt.include_usage)
        await response.start_stream()
        for event in fmt.opening():
            await response.chunk(event)
        if b.ttft_ms:
            await asyncio.sleep(b.ttft_ms / 1000)
        interval = 1 / b.tokens_per_second if b.tokens_per_second else 0.0
        for i, piece in enumerate(pieces):
            if breaking and i >= b.break_after_chunks:
                self._count(name, broken_streams=1)
                response.abort()
                return
            if i and interval:
                await asyncio.sleep(interval)
            await response.chunk(fmt.delta(piece, i + 1))
        if breaking:  # asked to break after more chunks than the reply has: break before the end
            self._count(name, broken_streams=1)
            response.abort()
            return
        # counted before the closing events go out: a client that has read [DONE] must find it counted
        self._count(name, completed=1, input_tokens=usage[0], output_tokens=usage[1])
        for event in fmt.closing(finish, len(pieces)):
            await response.chunk(event)
        await response.end_stream()


# ---------------------------------------------------------------------- request parsing


def _text_of(content: Any) -> str:
    """Message content as text: a string, or a list of text blocks/parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for block in content:
            if isinstance(block, str):
                out.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                out.append(block["text"])
        return "".join(out)
    if content is None:
        return ""
    raise _HttpError(400, "message content must be a string or a list of text blocks")


def _parse_prompt(api: str, body: dict[str, Any], request: _Request, gm: re.Match[str] | None) -> _Prompt:
    try:
        if api == "openai":
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise _HttpError(400, "'messages' must be a non-empty array")
            system = "\n".join(_text_of(m.get("content")) for m in msgs if m.get("role") in ("system", "developer"))
            conv = [
                (m.get("role", ""), _text_of(m.get("content")))
                for m in msgs
                if m.get("role") not in ("system", "developer")
            ]
            stop = body.get("stop") or []
            return _Prompt(
                api,
                str(body.get("model", "")),
                system,
                conv,
                bool(body.get("stream")),
                bool((body.get("stream_options") or {}).get("include_usage")),
                body.get("max_completion_tokens") or body.get("max_tokens"),
                [stop] if isinstance(stop, str) else list(stop),
            )
        if api == "anthropic":
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise _HttpError(400, "messages: field required (non-empty array)")
            if not isinstance(body.get("max_tokens"), int):
                raise _HttpError(400, "max_tokens: field required")
            conv = [(m.get("role", ""), _text_of(m.get("content"))) for m in msgs]
            return _Prompt(
                api,
                str(body.get("model", "")),
                _text_of(body.get("system")),
                conv,
                bool(body.get("stream")),
                True,
                body["max_tokens"],
                list(body.get("stop_sequences") or []),
            )
        assert gm is not None
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _HttpError(400, "contents must be a non-empty array")
        conv = [("assistant" if c.get("role") == "model" else "user", _text_of(c.get("parts"))) for c in contents]
        sys_inst = body.get("systemInstruction") or body.get("system_instruction") or {}
        config = body.get("generationConfig") or {}
        streaming = gm.group(2) == "streamGenerateContent"
        sse = streaming and request.query.get("alt") == "sse"
        return _Prompt(
            api,
            gm.group(1),
            _text_of(sys_inst.get("parts")) if isinstance(sys_inst, dict) else "",
            conv,
            sse,
            True,
            config.get("maxOutputTokens"),
            list(config.get("stopSequences") or []),
            json_array=streaming and not sse,
        )
    except (AttributeError, TypeError) as exc:
        raise _HttpError(400, f"malformed request: {exc}") from None


def _request_key(api: str, request: _Request) -> str | None:
    if api == "openai":
        auth = request.headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
    if api == "anthropic":
        return request.headers.get("x-api-key")
    return request.headers.get("x-goog-api-key") or request.query.get("key")


def _choose_reply(
    b: ProviderBehavior, prompt: _Prompt, provider: str, model: str, rng: random.Random | None = None
) -> str:
    reply = b.default_reply
    for rule in b.rules:
        haystack = prompt.last_user if rule.scope == "last_user" else prompt.whole
        if re.search(rule.match, haystack, re.IGNORECASE):
            reply = rule.pick(rng) if rng is not None else rule.reply
            break
    reply = reply.replace("{provider}", provider).replace("{model}", model).replace("{last_user}", prompt.last_user)
    for stop in prompt.stop:
        if stop and stop in reply:
            reply = reply[: reply.index(stop)]
    return reply


async def _sleep_or_gone(reader: asyncio.StreamReader, seconds: float) -> None:
    """Sleep, but end early (raising _ClientGone) if the client hangs up meanwhile."""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return
    if not data:
        raise _ClientGone()


# ---------------------------------------------------------------------- response formats

_ERROR_TYPES = {
    "openai": {
        400: "invalid_request_error",
        401: "invalid_request_error",
        429: "rate_limit_error",
        500: "server_error",
        503: "server_error",
    },
    "anthropic": {
        400: "invalid_request_error",
        401: "authentication_error",
        429: "rate_limit_error",
        500: "api_error",
        503: "overloaded_error",
    },
    "gemini": {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    },
}


async def _send_error(response: _Response, api: str, status: int, message: str) -> None:
    kind = _ERROR_TYPES[api].get(status, "error")
    headers = {"retry-after": "1"} if status == 429 else {}
    if api == "openai":
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    elif api == "anthropic":
        body = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"code": status, "message": message, "status": kind}}
    await response.send_json(status, body, **headers)


def _openai_full(model: str, text: str, finish: str, usage: tuple[int, int], report: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
    }
    if report:
        out["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return out


def _anthropic_full(model: str, text: str, finish: str, usage: tuple[int, int], report: bool) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if finish == "length" else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]} if report else {},
    }


def _gemini_full(model: str, text: str, finish: str, usage: tuple[int, int], report: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "MAX_TOKENS" if finish == "length" else "STOP",
                "index": 0,
            }
        ],
        "modelVersion": model,
    }
    if report:
        out["usageMetadata"] = {
            "promptTokenCount": usage[0],
            "candidatesTokenCount": usage[1],
            "totalTokenCount": sum(usage),
        }
    return out


_FULL: dict[str, Callable[[str, str, str, tuple[int, int], bool], dict[str, Any]]] = {
    "openai": _openai_full,
    "anthropic": _anthropic_full,
    "gemini": _gemini_full,
}


def _sse(obj: Any, event: str | None = None, sep: str = "\n\n") -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}{sep}".encode()


class _OpenAIStream:
    def __init__(self, model: str, usage: tuple[int, int], report: bool, include_usage: bool) -> None:
        self.model, self.usage, self.report, self.include_usage = model, usage, report, include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def opening(self) -> list[bytes]:
        return [_sse(self._chunk({"role": "assistant", "content": ""}, None))]

    def delta(self, piece: str, n: int) -> bytes:
        return _sse(self._chunk({"content": piece}, None))

    def closing(self, finish: str, n: int) -> list[bytes]:
        out = [_sse(self._chunk({}, finish))]
        if self.include_usage and self.report:
            u = self.usage
            usage_chunk = {
                **self._chunk({}, None),
                "choices": [],
                "usage": {"prompt_tokens": u[0], "completion_tokens": u[1], "total_tokens": sum(u)},
            }
            out.append(_sse(usage_chunk))
        out.append(b"data: [DONE]\n\n")
        return out


class _AnthropicStream:
    def __init__(self, model: str, usage: tuple[int, int], report: bool, include_usage: bool) -> None:
        self.model, self.usage, self.report = model, usage, report

    def opening(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.usage[0], "output_tokens": 1} if self.report else {},
        }
        return [
            _sse({"type": "message_start", "message": message}, "message_start"),
            _sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            ),
            _sse({"type": "ping"}, "ping"),
        ]

    def delta(self, piece: str, n: int) -> bytes:
        return _sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            "content_block_delta",
        )

    def closing(self, finish: str, n: int) -> list[bytes]:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens" if finish == "length" else "end_turn", "stop_sequence": None},
        }
        if self.report:
            delta["usage"] = {"output_tokens": self.usage[1]}
        return [
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse(delta, "message_delta"),
            _sse({"type": "message_stop"}, "message_stop"),
        ]


class _GeminiStream:
    def __init__(self, model: str, usage: tuple[int, int], report: bool, include_usage: bool) -> None:
        self.model, self.usage, self.report = model, usage, report

    def _chunk(self, text: str, n: int, finish: str | None) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            cand["finishReason"] = "MAX_TOKENS" if finish == "length" else "STOP"
        out: dict[str, Any] = {"candidates": [cand], "modelVersion": self.model}
        if self.report:
            out["usageMetadata"] = {
                "promptTokenCount": self.usage[0],
                "candidatesTokenCount": n,
                "totalTokenCount": self.usage[0] + n,
            }
        return out

    def opening(self) -> list[bytes]:
        return []

    def delta(self, piece: str, n: int) -> bytes:
        return _sse(self._chunk(piece, n, None), sep="\r\n\r\n")

    def closing(self, finish: str, n: int) -> list[bytes]:
        return [_sse(self._chunk("", n, finish), sep="\r\n\r\n")]


_STREAMS: dict[str, Callable[[str, tuple[int, int], bool, bool], Any]] = {
    "openai": _OpenAIStream,
    "anthropic": _AnthropicStream,
    "gemini": _GeminiStream,
}


# ---------------------------------------------------------------------- command line


def load_config(path: str) -> dict[str, ProviderBehavior]:
    """Read ``{"providers": {name: {behaviour fields}}}`` (or just ``{name: {...}}``)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    providers = data.get("providers", data) if isinstance(data, dict) else None
    if not isinstance(providers, dict):
        raise ValueError(f"{path}: expected a JSON object of providers")
    return {name: ProviderBehavior.from_dict(spec) for name, spec in providers.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic/Gemini server for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed on start)")
    parser.add_argument("--config", help='JSON file: {"providers": {"<name>": {behaviour fields}}}')
    args = parser.parse_args(argv)
    behaviors = load_config(args.config) if args.config else {}
    server = FakeLLMServer(args.host, args.port, behaviors)
    server.start()
    print(f"fake LLM server listening on {server.url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
