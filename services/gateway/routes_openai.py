"""OpenAI-compatible chat completions, so existing OpenAI clients talk to MasterX unchanged.

``model`` picks the routing: ``"masterx"`` or ``"auto"`` lets the router choose (emotion-aware
when the emotion service answers); any other name pins that provider (404 when unknown).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2
from masterx_runtime.logs import request_id_var
from services.gateway import sse, views
from services.gateway.chat import text_fingerprint
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.disconnect import EventStreamResponse, cancel_on_disconnect
from services.gateway.errors import GatewayError, bad_request, from_rpc_error
from services.gateway.identity import student_for
from services.gateway.peers import Peers, rpc
from services.gateway.schemas import ChatCompletionRequest

log = logging.getLogger("masterx.gateway.openai")

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

Cfg = Annotated[GatewaySettings, Depends(get_settings)]
PeersDep = Annotated[Peers, Depends(get_peers)]

ROUTED_MODELS = ("masterx", "auto")
_FINISH = {"stop", "length", "content_filter", "tool_calls"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def to_chat_messages(body: ChatCompletionRequest, cfg: GatewaySettings) -> list[common_pb2.ChatMessage]:
    """Provider-neutral messages; 400 for what MasterX cannot carry (tools, images, n > 1)."""
    if body.n is not None and body.n > 1:
        raise bad_request("n > 1 is not supported", "n")
    out = []
    for i, msg in enumerate(body.messages):
        if msg.role not in _ROLES:
            raise bad_request(
                f"messages[{i}]: role {msg.role!r} is not supported (no tool calls)", f"messages[{i}].role"
            )
        if isinstance(msg.content, list) and any(p.type != "text" for p in msg.content):
            raise bad_request(f"messages[{i}]: only text content parts are supported", f"messages[{i}].content")
        text = msg.text()
        if len(text) > cfg.max_message_chars:
            raise bad_request(f"messages[{i}] is longer than {cfg.max_message_chars} characters", f"messages[{i}]")
        out.append(common_pb2.ChatMessage(role=_ROLES[msg.role], content=text))
    if out[-1].role != "user" or not out[-1].content.strip():
        raise bad_request("the last message must be a non-empty user message", "messages")
    return out


def _finish(reason: str) -> str:
    return reason if reason in _FINISH else "stop"


def _usage(u: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": int(u.tokens.input_tokens),
        "completion_tokens": int(u.tokens.output_tokens),
        "total_tokens": int(u.tokens.total_tokens),
    }


def _extension(done: router_pb2.GenerateResponse) -> dict[str, Any]:
    """MasterX facts OpenAI clients ignore but can read (extra fields are allowed); ``emotion`` is
    the router's analysis of the last message (None when emotion is off or the analysis failed)."""
    return {
        "provider": done.provider,
        "model": done.model,
        "reasons": list(done.decision.reasons),
        "cost_usd": round(done.usage.cost_usd, 8),
        "emotion": views.emotion(done.emotion) if done.HasField("emotion") else None,
        # what became of the provider call the router started before the analysis (router.proto Speculation)
        "speculation": router_pb2.Speculation.Name(done.decision.speculation).removeprefix("SPECULATION_").lower(),
    }


@router.post("/chat/completions", summary="OpenAI-compatible chat completions (streaming and not)")
async def chat_completions(request: Request, body: ChatCompletionRequest, cfg: Cfg, peers: PeersDep) -> Any:
    messages = to_chat_messages(body, cfg)
    routed = body.model.lower() in ROUTED_MODELS
    user = student_for(request, body.user or "", field="user", write=True)
    log.info("completion", extra={"model": body.model, "stream": body.stream, **text_fingerprint(messages[-1].content)})
    # The router analyses the message itself (analyze_emotion: Analyze with the student's id, so
    # the history is kept), routes on it and returns it for `masterx.emotion`. It calls the
    # provider it would pick without the analysis while the analysis runs and keeps that call
    # when the analysis agrees, so emotion-aware routing adds no wait to the answer.
    gen = router_pb2.GenerateRequest(
        messages=messages,
        user_id=user,
        analyze_emotion=cfg.openai_emotion,
        pinned_provider="" if routed else body.model,
        max_tokens=body.max_completion_tokens or body.max_tokens or 0,
        purpose=router_pb2.PURPOSE_CHAT,
        stop=[body.stop] if isinstance(body.stop, str) else (body.stop or []),
    )
    if body.temperature is not None:
        gen.temperature = body.temperature
    completion_id = f"chatcmpl-{request_id_var.get()}"
    created = int(time.time())
    if not body.stream:
        done = await cancel_on_disconnect(
            request, rpc("router", peers.router.Generate(gen, timeout=cfg.generate_timeout_seconds))
        )
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": done.provider,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": done.text},
                        "finish_reason": _finish(done.finish_reason),
                        "logprobs": None,
                    }
                ],
                "usage": _usage(done.usage),
                "system_fingerprint": None,
                "masterx": _extension(done),
            }
        )
    return await _stream(peers, cfg, gen, body, completion_id, created)


async def _stream(
    peers: Peers,
    cfg: GatewaySettings,
    gen: router_pb2.GenerateRequest,
    body: ChatCompletionRequest,
    completion_id: str,
    created: int,
) -> EventStreamResponse:
    """Wait for the router's decision first, so routing errors are real HTTP errors; then stream."""
    call = peers.router.GenerateStream(gen, timeout=cfg.generate_timeout_seconds)
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as exc:
        call.cancel()
        raise from_rpc_error(exc, "router") from None
    if first is grpc.aio.EOF:
        raise GatewayError(502, "INTERNAL", "router stream ended before its decision", service="router")
    model = first.decision.provider if first.HasField("decision") else body.model
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        return sse.data_only(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
        )

    async def events() -> AsyncIterator[bytes]:
        try:
            yield chunk({"role": "assistant", "content": ""}, None)
            pending = [first]
            while True:
                msg = pending.pop() if pending else await call.read()
                if msg is grpc.aio.EOF:
                    break
                kind = msg.WhichOneof("kind")
                if kind == "delta" and msg.delta:
                    yield chunk({"content": msg.delta}, None)
                elif kind == "done":
                    yield chunk({}, _finish(msg.done.finish_reason))
                    if include_usage:
                        yield sse.data_only(
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": _usage(msg.done.usage),
                                "masterx": _extension(msg.done),
                            }
                        )
            yield sse.data_only("[DONE]")
        except grpc.aio.AioRpcError as exc:
            yield sse.data_only(from_rpc_error(exc, "router").body(request_id_var.get()))
        finally:
            call.cancel()

    return EventStreamResponse(events(), headers=sse.SSE_HEADERS)


@router.get("/models", summary="Models: `masterx` (routed) and one per configured provider (pinned)")
async def models(cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    resp = await rpc(
        "router", peers.router.ListProviders(router_pb2.ListProvidersRequest(), timeout=cfg.rpc_timeout_seconds)
    )
    data = [{"id": "masterx", "object": "model", "created": 0, "owned_by": "masterx"}]
    data += [
        {"id": p.name, "object": "model", "created": 0, "owned_by": f"masterx:{p.kind}", "model": p.model}
        for p in resp.providers
    ]
    return {"object": "list", "data": data}
