"""One tutor chat turn: emotion -> budget -> (MCTS) -> route and generate.

:func:`chat_events` yields the turn as events in the order the streaming endpoint sends them;
the non-streaming endpoint folds the same events into one answer, so both stay identical.
The router is essential (its failure ends the turn with its error); emotion and reasoning are
optional: if they fail the turn goes on without them and the ``degraded`` list says which.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2
from masterx.reasoning.v1 import reasoning_pb2
from masterx.router.v1 import router_pb2
from masterx_runtime.logs import request_id_var
from services.gateway import opsdata, views
from services.gateway.config import GatewaySettings
from services.gateway.errors import GatewayError, from_rpc_error
from services.gateway.peers import Peers
from services.gateway.prompting import tutor_messages
from services.gateway.protojson import to_dict
from services.gateway.schemas import ChatRequest, StudentContextIn

log = logging.getLogger("masterx.gateway.chat")

Event = tuple[str, dict[str, Any]]


def student_context(ctx: StudentContextIn | None) -> common_pb2.StudentContext | None:
    if ctx is None:
        return None
    return common_pb2.StudentContext(**ctx.model_dump(exclude_none=True))


def text_fingerprint(text: str) -> dict[str, Any]:
    """What logs may say about a student's message by default: its length and a short hash."""
    return {"text_chars": len(text), "text_sha256": hashlib.sha256(text.encode()).hexdigest()[:12]}


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def degraded_entry(service: str, err: GatewayError) -> dict[str, Any]:
    return {"service": service, "code": err.code, "status": err.status, "message": err.message}


@dataclass
class TurnState:
    """What a turn has learnt so far (the final summary is built from it)."""

    emotion: common_pb2.EmotionResult | None = None
    budget: common_pb2.TokenBudget | None = None
    reasoning: reasoning_pb2.ReasonResult | None = None
    thinking: reasoning_pb2.ThinkingDecision | None = None  # the metacognitive controller's decision
    degraded: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


async def _analyze(peers: Peers, cfg: GatewaySettings, req: ChatRequest, st: TurnState) -> Event:
    start = time.perf_counter()
    try:
        resp = await peers.emotion.Analyze(
            emotion_pb2.AnalyzeRequest(
                text=req.message,
                user_id=req.user_id,
                session_id=req.session_id,
                context=student_context(req.context),
                request_id=request_id_var.get(),  # the turn id a later outcome names
            ),
            timeout=cfg.emotion_timeout_seconds,
        )
    except grpc.aio.AioRpcError as exc:
        entry = degraded_entry("emotion", from_rpc_error(exc, "emotion"))
        st.degraded.append(entry)
        return "degraded", entry
    finally:
        st.timings["emotion_ms"] = _ms(start)
    st.emotion = resp.result
    return "emotion", views.emotion(resp.result)


async def _allocate(peers: Peers, cfg: GatewaySettings, req: ChatRequest, st: TurnState) -> Event:
    start = time.perf_counter()
    prompt_chars = len(req.message) + sum(len(m.content) for m in req.history)
    try:
        budget = await peers.reasoning.AllocateBudget(
            reasoning_pb2.AllocateBudgetRequest(
                query=req.message,
                emotion=st.emotion,
                context=student_context(req.context),
                prompt_tokens=prompt_chars // 4,
            ),
            timeout=cfg.budget_timeout_seconds,
        )
    except grpc.aio.AioRpcError as exc:
        entry = degraded_entry("reasoning", from_rpc_error(exc, "reasoning"))
        st.degraded.append(entry)
        return "degraded", entry
    finally:
        st.timings["budget_ms"] = _ms(start)
    st.budget = budget
    return "budget", views.budget(budget)


async def _decide(peers: Peers, cfg: GatewaySettings, req: ChatRequest, st: TurnState) -> bool:
    """Whether to run deep thinking: the reasoning service's controller decides (the user's
    explicit choice wins there too); when the service already failed this turn, or the call
    fails, the user's choice, else the budget's recommendation."""
    fallback = (
        req.deep_thinking if req.deep_thinking is not None else bool(st.budget and st.budget.recommend_deep_thinking)
    )
    if st.budget is None:  # AllocateBudget failed: the reasoning service is degraded already
        return fallback
    decide = reasoning_pb2.DecideThinkingRequest(
        query=req.message,
        user_id=req.user_id,
        session_id=req.session_id,
        turn_id=request_id_var.get(),
        emotion=st.emotion,
        budget=st.budget,
        follows_answer=bool(req.history) and req.history[-1].role == "assistant",
    )
    if req.deep_thinking is not None:
        decide.deep_thinking = req.deep_thinking
    start = time.perf_counter()
    try:
        st.thinking = await peers.reasoning.DecideThinking(decide, timeout=cfg.budget_timeout_seconds)
    except grpc.aio.AioRpcError as exc:
        st.degraded.append(degraded_entry("reasoning", from_rpc_error(exc, "reasoning")))
        return fallback
    finally:
        st.timings["thinking_ms"] = _ms(start)
    return st.thinking.deep_thinking


async def _reason(peers: Peers, cfg: GatewaySettings, req: ChatRequest, st: TurnState) -> AsyncIterator[Event]:
    start = time.perf_counter()
    call = peers.reasoning.Reason(
        reasoning_pb2.ReasonRequest(
            query=req.message,
            user_id=req.user_id,
            session_id=req.session_id,
            emotion=st.emotion,
            category=views.category_value(req.category),
            budget=st.budget,
            pinned_provider=req.provider,
            limits=st.thinking.limits if st.thinking is not None else None,
            turn_id=request_id_var.get(),  # the chain is stored for GET /api/v1/turns/{id}/reasoning
        ),
        timeout=cfg.reason_timeout_seconds,
    )
    try:
        async for event in call:
            if event.HasField("step"):
                yield "reasoning_step", views.step(event.step)
            elif event.HasField("result"):
                st.reasoning = event.result
                yield "reasoning", views.reasoning(event.result)
    except grpc.aio.AioRpcError as exc:
        entry = degraded_entry("reasoning", from_rpc_error(exc, "reasoning"))
        st.degraded.append(entry)
        yield "degraded", entry
    finally:
        call.cancel()
        st.timings["reasoning_ms"] = _ms(start)


def _generate_request(cfg: GatewaySettings, req: ChatRequest, st: TurnState) -> router_pb2.GenerateRequest:
    history = [(m.role, m.content) for m in req.history[-cfg.max_history_messages :]]
    gen = router_pb2.GenerateRequest(
        messages=tutor_messages(cfg.system_prompt, history, req.message, st.emotion, st.reasoning),
        user_id=req.user_id,
        session_id=req.session_id,
        category=views.category_value(req.category),
        emotion=st.emotion,
        pinned_provider=req.provider,
        max_tokens=req.max_tokens or 0,
        purpose=router_pb2.PURPOSE_CHAT,
        budget=st.budget,
    )
    if req.temperature is not None:
        gen.temperature = req.temperature
    if req.cost_quality is not None:
        gen.cost_quality = req.cost_quality
    return gen


def _summary(st: TurnState, done: router_pb2.GenerateResponse, reply: str, total_start: float) -> dict[str, Any]:
    """The final answer fields shared by both endpoints (everything but the streamed pieces)."""
    gen_usage = views.usage(done.usage)
    totals = {k: gen_usage[k] for k in ("input_tokens", "output_tokens", "total_tokens")}
    cost = done.usage.cost_usd
    breakdown: dict[str, Any] = {"generate": gen_usage}
    provider_ms = done.latency_ms
    if st.reasoning is not None:
        r_usage = views.usage(st.reasoning.usage)
        breakdown["reasoning"] = r_usage
        for k in totals:
            totals[k] += r_usage[k]
        cost += st.reasoning.usage.cost_usd
        provider_ms += st.reasoning.search.wall_ms
    timings = dict(st.timings)
    timings["provider_ms"] = round(done.latency_ms, 2)
    timings["ttft_ms"] = round(done.ttft_ms, 2)
    timings["total_ms"] = _ms(total_start)
    timings["overhead_ms"] = round(max(0.0, timings["total_ms"] - provider_ms), 2)
    return {
        "reply": reply,
        "emotion": views.emotion(st.emotion) if st.emotion is not None else None,
        "budget": views.budget(st.budget) if st.budget is not None else None,
        "reasoning": views.reasoning(st.reasoning) if st.reasoning is not None else None,
        "thinking": to_dict(st.thinking) if st.thinking is not None else None,
        "provider": views.decision(done.decision) | {"name": done.provider, "model": done.model},
        "usage": {**totals, "estimated": gen_usage["estimated"], "cost_usd": round(cost, 8), "breakdown": breakdown},
        "finish_reason": done.finish_reason,
        "attempts": views.attempts(done.attempts),
        "timings_ms": timings,
        "degraded": st.degraded,
    }


async def chat_events(peers: Peers, cfg: GatewaySettings, req: ChatRequest, *, stream: bool) -> AsyncIterator[Event]:
    """The turn as events: emotion, budget, reasoning steps, decision, deltas, done.

    Raises :class:`GatewayError` when the router (the essential step) fails.
    """
    total_start = time.perf_counter()
    st = TurnState()
    log.info(
        "chat turn",
        extra={
            "user_id": req.user_id,
            "session_id": req.session_id,
            "history": len(req.history),
            **({"text": req.message} if cfg.log_message_text else text_fingerprint(req.message)),
        },
    )
    yield await _analyze(peers, cfg, req, st)
    yield await _allocate(peers, cfg, req, st)
    if await _decide(peers, cfg, req, st):
        async for event in _reason(peers, cfg, req, st):
            yield event

    gen = _generate_request(cfg, req, st)
    start = time.perf_counter()
    try:
        if stream:
            pieces: list[str] = []
            done: router_pb2.GenerateResponse | None = None
            call = peers.router.GenerateStream(gen, timeout=cfg.generate_timeout_seconds)
            try:
                async for chunk in call:
                    kind = chunk.WhichOneof("kind")
                    if kind == "decision":
                        yield "decision", views.decision(chunk.decision)
                    elif kind == "delta":
                        pieces.append(chunk.delta)
                        yield "delta", {"text": chunk.delta}
                    elif kind == "done":
                        done = chunk.done
            finally:
                call.cancel()
            if done is None:
                raise GatewayError(502, "INTERNAL", "router stream ended without a final chunk", service="router")
            reply = done.text or "".join(pieces)
        else:
            done = await peers.router.Generate(gen, timeout=cfg.generate_timeout_seconds)
            reply = done.text
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc, "router") from None
    finally:
        st.timings["generate_ms"] = _ms(start)
    summary = _summary(st, done, reply, total_start)
    endpoint = "chat/stream" if stream else "chat"
    opsdata.DECISIONS.record(opsdata.decision_record(summary, request_id_var.get(), endpoint))
    log.info(
        "chat answered",
        extra={
            "provider": done.provider,
            "total_ms": summary["timings_ms"]["total_ms"],
            "degraded": [d["service"] for d in st.degraded],
        },
    )
    yield "done", summary
