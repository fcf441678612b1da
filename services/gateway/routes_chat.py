"""Tutor chat (one answer or Server-Sent Events) and emotion analysis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from masterx.emotion.v1 import emotion_pb2
from masterx_runtime.logs import request_id_var
from services.gateway import sse, views
from services.gateway.chat import chat_events, student_context
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.disconnect import EventStreamResponse, cancel_on_disconnect
from services.gateway.errors import GatewayError, bad_request
from services.gateway.peers import Peers, rpc
from services.gateway.protojson import to_dict
from services.gateway.schemas import ChatRequest, EmotionRequest

router = APIRouter(prefix="/api/v1", tags=["tutor"])

Cfg = Annotated[GatewaySettings, Depends(get_settings)]
PeersDep = Annotated[Peers, Depends(get_peers)]


def check_chat_limits(req: ChatRequest, cfg: GatewaySettings) -> None:
    if len(req.message) > cfg.max_message_chars:
        raise bad_request(f"message is longer than {cfg.max_message_chars} characters", "message", 422)
    if not req.message.strip():
        raise bad_request("message is empty", "message", 422)
    if len(req.history) > cfg.max_history_messages:
        raise bad_request(f"history has more than {cfg.max_history_messages} messages", "history", 422)


@router.post("/chat", summary="One tutor turn: emotion, budget, (deep thinking), routed answer")
async def chat(request: Request, req: ChatRequest, cfg: Cfg, peers: PeersDep) -> JSONResponse:
    """Answer a student's message with the reply and everything behind it.

    The router is essential (its error is the answer's error); emotion and reasoning are
    optional: when one fails the reply still comes, and ``degraded`` names the service.
    """
    check_chat_limits(req, cfg)

    async def turn() -> dict[str, Any]:
        answer: dict[str, Any] = {}
        steps: list[dict[str, Any]] = []
        async for name, payload in chat_events(peers, cfg, req, stream=False):
            if name == "reasoning_step":
                steps.append(payload)
            elif name == "done":
                answer = payload
        if answer.get("reasoning") is not None:
            answer["reasoning"]["steps"] = steps
        return {"request_id": request_id_var.get(), "session_id": req.session_id, **answer}

    # JSONResponse directly: the answer is plain JSON already, no need for FastAPI's encoder pass.
    return JSONResponse(await cancel_on_disconnect(request, turn()))


@router.post(
    "/chat/stream",
    summary="The same turn as Server-Sent Events",
    response_class=EventStreamResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_stream(req: ChatRequest, cfg: Cfg, peers: PeersDep) -> EventStreamResponse:
    """Events, in order: ``meta``, ``emotion`` (or ``degraded``), ``budget``, ``reasoning_step``
    and ``reasoning`` when deep thinking runs, ``decision``, ``delta`` (answer text), ``usage``,
    ``done``. A failure after the stream has started arrives as an ``error`` event carrying
    the same JSON body and status an error answer would have."""
    check_chat_limits(req, cfg)

    async def events() -> AsyncIterator[bytes]:
        yield sse.event("meta", {"request_id": request_id_var.get(), "session_id": req.session_id})
        try:
            async for name, payload in chat_events(peers, cfg, req, stream=True):
                if name == "done":
                    yield sse.event("usage", {"usage": payload["usage"], "timings_ms": payload["timings_ms"]})
                    payload = {k: v for k, v in payload.items() if k != "reply"} | {
                        "reply_chars": len(payload["reply"])
                    }
                yield sse.event(name, payload)
        except GatewayError as err:
            yield sse.event("error", err.body(request_id_var.get()))

    return EventStreamResponse(events(), headers=sse.SSE_HEADERS)


@router.post("/emotion", summary="Analyse one message (emotion service)")
async def emotion(req: EmotionRequest, cfg: Cfg, peers: PeersDep) -> JSONResponse:
    """All 28 emotion probabilities, PAD, learning state, readiness and intervention."""
    if not req.text.strip():
        raise bad_request("text is empty", "text", 422)
    if len(req.text) > cfg.max_message_chars:
        raise bad_request(f"text is longer than {cfg.max_message_chars} characters", "text", 422)
    resp = await rpc(
        "emotion",
        peers.emotion.Analyze(
            emotion_pb2.AnalyzeRequest(
                text=req.text, user_id=req.user_id, session_id=req.session_id, context=student_context(req.context)
            ),
            timeout=cfg.emotion_timeout_seconds,
        ),
    )
    return JSONResponse(views.emotion_full(resp.result))


@router.get("/students/{user_id}/trajectory", summary="A student's emotional trajectory and recent history")
async def trajectory(
    user_id: Annotated[str, Path(min_length=1, max_length=128)], cfg: Cfg, peers: PeersDep, limit: int = 20
) -> dict[str, Any]:
    if not 0 <= limit <= 500:
        raise bad_request("limit must be between 0 and 500", "limit")
    resp = await rpc(
        "emotion",
        peers.emotion.GetTrajectory(
            emotion_pb2.GetTrajectoryRequest(user_id=user_id, limit=limit), timeout=cfg.rpc_timeout_seconds
        ),
    )
    return to_dict(resp)
