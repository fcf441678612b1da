"""The router's own emotion analysis, for requests that ask for it (``analyze_emotion``).

A caller that wants emotion-aware routing without waiting for the analysis itself (the
gateway's ``/v1/chat/completions``) sends the text with ``analyze_emotion`` instead of an
emotion result. The router then calls the emotion service's ``Analyze`` with the request's
``user_id`` and ``session_id`` (so the student's history is kept, as when the gateway called
it), routes on the answer and returns it to the caller; meanwhile it may already have started
the provider it would pick without it (``Router._speculate``).

The response is converted by the function the app hands in (the servicer's proto -> domain
conversion), so nothing here reads a protobuf field.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.errors import InvalidArgument
from services.router.domain import EmotionEvidence, RouteRequest

log = logging.getLogger("masterx.router.emotion")


class EmotionPeer:
    """Analyze calls to the emotion service at ``addr`` ('' = no emotion service: every call gives None)."""

    def __init__(
        self,
        addr: str,
        *,
        timeout_seconds: float,
        convert: Callable[[emotion_pb2.AnalyzeResponse], EmotionEvidence],
    ) -> None:
        self.addr = addr
        self.timeout_seconds = timeout_seconds
        self._convert = convert
        self._channel: grpc.aio.Channel | None = None
        self.failures = 0
        self.last_error = ""

    async def analyze(self, req: RouteRequest, timeout: float | None = None) -> EmotionEvidence | None:
        """The analysis of ``req``'s last message, or None (logged once per new error) when it failed."""
        if not self.addr:
            return None
        if self._channel is None:
            self._channel = channel(self.addr)
        stub = emotion_pb2_grpc.EmotionServiceStub(self._channel)
        request = emotion_pb2.AnalyzeRequest(text=req.text, user_id=req.user_id, session_id=req.session_id)
        limit = self.timeout_seconds if timeout is None else max(min(timeout, self.timeout_seconds), 0.001)
        try:
            evidence = self._convert(await stub.Analyze(request, timeout=limit))
        except grpc.aio.AioRpcError as err:
            why = f"{err.code().name}: {err.details()}"
        except InvalidArgument as err:  # malformed scores from the peer
            why = f"bad emotion result: {err}"
        else:
            self.last_error = ""
            return evidence
        self.failures += 1
        if why != self.last_error:
            log.warning("emotion analysis failed; routing without it", extra={"error": why})
        self.last_error = why
        return None

    async def close(self) -> None:
        if self._channel is not None:
            await asyncio.shield(self._channel.close())
            self._channel = None
