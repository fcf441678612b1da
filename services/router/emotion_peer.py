"""The router's own emotion analysis, for requests that ask for it (``analyze_emotion``).

A caller that wants emotion-aware routing without waiting for the analysis itself (the
gateway's ``/v1/chat/completions``) sends the text with ``analyze_emotion`` instead of an
emotion result. The router then asks the emotion service (EMOTION_ADDR) for the analysis with
the request's ``user_id`` and ``session_id`` (so the student's history is kept, as when the
gateway called it), routes on the answer and returns it to the caller; meanwhile it may already
have started the provider it would pick without it (``Router._plan_with_analysis``).

Transport (ROUTER_EMOTION_STREAM): by default every analysis travels on one long-lived
``StreamAnalyze`` call (:class:`AnalyzeStream`) instead of a unary ``Analyze`` each. A message
on an open stream costs both processes far less than a new RPC (measured on this project's
2-core VM with a trivial servicer: ~150 us less server CPU and ~100 us less client CPU per
message). The service answers a stream's messages in the order they were sent, so each message
waits on a future at the back of a queue and the reader settles the front one. The per-request
deadline is kept here (a timer settles the future with a timeout; the late answer is dropped
when it arrives); the emotion service itself sees no per-message deadline. When the stream
breaks (the service restarted, the connection dropped), the messages in flight are answered
"unavailable" and the next request opens a new stream. With the setting off, each analysis is
its own unary ``Analyze`` with its own deadline.

Either way a failed analysis gives None (logged once per new error): the request is routed
without it. The response is converted by the function the app hands in (the servicer's proto
-> domain conversion), so nothing here reads a protobuf field other than the stream's
per-message ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Callable

import grpc

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.errors import InvalidArgument
from services.router.domain import EmotionEvidence, RouteRequest

log = logging.getLogger("masterx.router.emotion")

#: What one message on the stream comes to: the response, or why there is none.
Outcome = tuple[emotion_pb2.AnalyzeResponse | None, str]


class AnalyzeStream:
    """One ``StreamAnalyze`` call that carries many requests' analyses (module docstring)."""

    def __init__(self, stub: emotion_pb2_grpc.EmotionServiceStub) -> None:
        self._call = stub.StreamAnalyze()
        self._waiting: deque[asyncio.Future[Outcome]] = deque()
        self._outgoing: asyncio.Queue[emotion_pb2.AnalyzeRequest | None] = asyncio.Queue()
        self.broken = ""  # why the stream ended ("" while it is open)
        self._tasks = [
            asyncio.create_task(self._write(), name="emotion-stream-write"),
            asyncio.create_task(self._read(), name="emotion-stream-read"),
        ]

    def submit(self, request: emotion_pb2.AnalyzeRequest, timeout: float) -> asyncio.Future[Outcome]:
        """Queue ``request``; the future settles with its response, or with why there is none
        (after ``timeout`` seconds at the latest)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        timer = loop.call_later(
            timeout, _settle, future, (None, f"DEADLINE_EXCEEDED: no analysis within {timeout:.3f}s")
        )
        future.add_done_callback(lambda _f: timer.cancel())
        self._waiting.append(future)
        self._outgoing.put_nowait(request)
        return future

    async def _write(self) -> None:
        try:
            while (request := await self._outgoing.get()) is not None:
                await self._call.write(request)
            await self._call.done_writing()
        except grpc.aio.AioRpcError as err:
            self._end(f"{err.code().name}: {err.details()}")
        except asyncio.InvalidStateError:  # the call ended while writing; the reader says why
            pass

    async def _read(self) -> None:
        why = "UNAVAILABLE: the analysis stream ended"
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                if not self._waiting:  # an answer nobody asked for: the stream is out of step
                    why = "INTERNAL: the emotion service answered more messages than were sent"
                    break
                _settle(self._waiting.popleft(), (response, ""))
        except grpc.aio.AioRpcError as err:
            why = f"{err.code().name}: {err.details()}"
        self._end(why)

    def _end(self, why: str) -> None:
        """The stream is over: everything still waiting is answered with ``why``."""
        if not self.broken:
            self.broken = why
        while self._waiting:
            _settle(self._waiting.popleft(), (None, self.broken))
        self._outgoing.put_nowait(None)

    async def close(self) -> None:
        self._end("CANCELLED: the router is stopping")
        self._call.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


class EmotionPeer:
    """Analyses from the emotion service at ``addr`` ('' = no emotion service: every call gives None)."""

    def __init__(
        self,
        addr: str,
        *,
        timeout_seconds: float,
        convert: Callable[[emotion_pb2.AnalyzeResponse], EmotionEvidence],
        stream: bool = True,
    ) -> None:
        self.addr = addr
        self.timeout_seconds = timeout_seconds
        self.use_stream = stream
        self._convert = convert
        self._channel: grpc.aio.Channel | None = None
        self._stub: emotion_pb2_grpc.EmotionServiceStub | None = None
        self._stream: AnalyzeStream | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.streams_opened = 0
        self.failures = 0
        self.last_error = ""

    async def analyze(self, req: RouteRequest, timeout: float | None = None) -> EmotionEvidence | None:
        """The analysis of ``req``'s last message, or None (logged once per new error) when it failed."""
        if not self.addr:
            return None
        if self._stub is None:
            self._channel = channel(self.addr)
            self._stub = emotion_pb2_grpc.EmotionServiceStub(self._channel)
        request = emotion_pb2.AnalyzeRequest(text=req.text, user_id=req.user_id, session_id=req.session_id)
        limit = self.timeout_seconds if timeout is None else max(min(timeout, self.timeout_seconds), 0.001)
        evidence: EmotionEvidence | None = None
        try:
            if self.use_stream:
                response, why = await self._open_stream().submit(request, limit)
            else:
                response, why = await self._stub.Analyze(request, timeout=limit), ""
            if response is not None and response.error:
                why = response.error
            elif response is not None:
                evidence = self._convert(response)
        except grpc.aio.AioRpcError as err:
            why = f"{err.code().name}: {err.details()}"
        except InvalidArgument as err:  # malformed scores from the peer
            why = f"bad emotion result: {err}"
        if evidence is not None:
            self.last_error = ""
            return evidence
        self.failures += 1
        if why != self.last_error:
            log.warning("emotion analysis failed; routing without it", extra={"error": why})
        self.last_error = why
        return None

    def _open_stream(self) -> AnalyzeStream:
        """The open stream, or a new one when there is none or the last one broke.

        A new stream starts in an empty context: it serves every request from now on, so it
        must not carry (in its metadata, or in its tasks' log context) the request id of the
        request that happened to open it."""
        if self._stream is None or self._stream.broken:
            assert self._stub is not None
            old, self._stream = self._stream, contextvars.Context().run(AnalyzeStream, self._stub)
            self.streams_opened += 1
            if old is not None:
                closing = asyncio.get_running_loop().create_task(old.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        return self._stream

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self._channel is not None:
            await asyncio.shield(self._channel.close())
            self._channel = None
            self._stub = None
