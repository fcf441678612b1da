"""Tutor chat (one answer or Server-Sent Events) and emotion analysis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from masterx.emotion.v1 import emotion_pb2
from masterx_runtime.logs import request_id_var
from services.gateway import sse, views
from services.gateway.chat import chat_events, student_context
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.disconnect import EventStreamResponse, cancel_on_disconnect
from services.gateway.errors import GatewayError, bad_request
from services.gateway.identity import student_for
from services.gateway.peers import Peers, rpc
from services.gateway.protojson import to_dict
from services.gateway.schemas import ChatRequest, EmotionRequest, PathUserId

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
    req.user_id = student_for(request, req.user_id, write=True)

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
async def chat_stream(request: Request, req: ChatRequest, cfg: Cfg, peers: PeersDep) -> EventStreamResponse:
    """Events, in order: ``meta``, ``emotion`` (or ``degraded``), ``budget``, ``reasoning_step``
    and ``reasoning`` when deep thinking runs, ``decision``, ``delta`` (answer text), ``usage``,
    ``done``. An error before the router's decision (or the first reasoning step) is a plain
    HTTP error answer with its status (e.g. 404 for an unknown pinned provider, 503 when the
    router is down); a failure after that arrives as an ``error`` event carrying the same JSON
    body and status an error answer would have."""
    check_chat_limits(req, cfg)
    req.user_id = student_for(request, req.user_id, write=True)
    pipeline = chat_events(peers, cfg, req, stream=True)
    # Emotion and budget come first and only degrade; hold them until the router (or the
    # search) has answered, so a routing error can still be the HTTP status.
    head: list[tuple[str, Any]] = []
    finished = False
    try:
        while not head or head[-1][0] not in _STREAM_STARTED:
            head.append(await anext(pipeline))
    except StopAsyncIteration:
        finished = True

    def render(name: str, payload: Any) -> Iterator[bytes]:
        if name == "done":
            yield sse.event("usage", {"usage": payload["usage"], "timings_ms": payload["timings_ms"]})
            payload = {k: v for k, v in payload.items() if k != "reply"} | {"reply_chars": len(payload["reply"])}
        yield sse.event(name, payload)

    async def events() -> AsyncIterator[bytes]:
        yield sse.event("meta", {"request_id": request_id_var.get(), "session_id": req.session_id})
        try:
            for name, payload in head:
                for chunk in render(name, payload):
                    yield chunk
            if not finished:
                async for name, payload in pipeline:
                    for chunk in render(name, payload):
                        yield chunk
        except GatewayError as err:
            yield sse.event("error", err.body(request_id_var.get()))
        finally:
            close = getattr(pipeline, "aclose", None)
            if close is not None:
                await close()

    return EventStreamResponse(events(), headers=sse.SSE_HEADERS)


#: Events after which the stream counts as started (errors become ``error`` events).
_STREAM_STARTED = frozenset({"decision", "delta", "reasoning_step", "done"})


@router.post("/emotion", summary="Analyse one message (emotion service)")
async def emotion(request: Request, req: EmotionRequest, cfg: Cfg, peers: PeersDep) -> JSONResponse:
    """All 28 emotion probabilities, PAD, learning state, readiness and intervention."""
    req.user_id = student_for(request, req.user_id, write=True)
    if not req.text.strip():
        raise bad_request("text is empty", "text", 422)
    if len(req.text) > cfg.max_message_chars:
        raise bad_request(f"text is longer than {cfg.max_message_chars} characters", "text", 422)
    resp = await rpc(
        "emotion",
        peers.emotion.Analyze(
            emotion_pb2.AnalyzeRequest(
                text=req.text,
                user_id=req.user_id,
                session_id=req.session_id,
                context=student_context(req.context),
                request_id=request_id_var.get(),
            ),
            timeout=cfg.emotion_timeout_seconds,
        ),
    )
    # With a user_id the analysis is kept as turn `request_id`, for POST /api/v1/outcomes.
    return JSONResponse({"request_id": request_id_var.get(), **views.emotion_full(resp.result)})


@router.get("/students/{user_id}/trajectory", summary="A student's emotional trajectory and recent history")
async def trajectory(
    request: Request, user_id: PathUserId, cfg: Cfg, peers: PeersDep, limit: int = 20
) -> dict[str, Any]:
    user_id = student_for(request, user_id, write=False)
    if not 0 <= limit <= 500:
        raise bad_request("limit must be between 0 and 500", "limit")
    resp = await rpc(
        "emotion",
        peers.emotion.GetTrajectory(
            emotion_pb2.GetTrajectoryRequest(user_id=user_id, limit=limit), timeout=cfg.rpc_timeout_seconds
        ),
    )
    return to_dict(resp)
