"""The router's gRPC surface: proto -> domain types in, domain -> proto out, nothing else.

Input checks that name a request field live here (INVALID_ARGUMENT with the field); what the
router does with a valid request is ``engine.Router``'s business.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

import grpc

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.errors import InvalidArgument, NotFound, Unavailable
from services.router.decision import Candidate, Decision
from services.router.domain import (
    CATEGORIES,
    Answer,
    CategoryScores,
    CategorySource,
    EmotionEvidence,
    EmotionSignal,
    LearningState,
    RouteRequest,
    Speculation,
    Trajectory,
)
from services.router.ledger import parse_day, utc_day
from services.router.plan import Plan
from services.router.providers.base import ChatRequest, Message, Usage

if TYPE_CHECKING:
    from services.router.app import RouterApp

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 200
MAX_MESSAGE_CHARS = 200_000
#: How far from 1 a request's category probabilities may sum.
SUM_TOLERANCE = 0.02


def category_enum(name: str) -> common_pb2.Category.ValueType:
    return common_pb2.Category.Value(f"CATEGORY_{name.upper()}")


def category_scores(
    scores: Iterable[common_pb2.CategoryScore], followup: float, where: str
) -> tuple[tuple[float, ...], float]:
    """Checked probabilities over CATEGORIES: each in [0, 1] and finite, no duplicate or
    UNSPECIFIED category, summing to 1 +- SUM_TOLERANCE; raises InvalidArgument naming the field."""
    field = f"{where}.category_scores"
    probs = [0.0] * len(CATEGORIES)
    seen: set[int] = set()
    for i, s in enumerate(scores):
        if not 1 <= s.category <= len(CATEGORIES):
            raise InvalidArgument(
                f"{field}[{i}].category must be one of the six categories (not UNSPECIFIED)",
                reason="BAD_CATEGORY_SCORES",
                field=f"{field}[{i}].category",
            )
        if s.category in seen:
            raise InvalidArgument(
                f"{field} names {common_pb2.Category.Name(s.category)} twice",
                reason="BAD_CATEGORY_SCORES",
                field=field,
            )
        if not (math.isfinite(s.probability) and 0.0 <= s.probability <= 1.0):
            raise InvalidArgument(
                f"{field}[{i}].probability is {s.probability}; it must be in [0, 1]",
                reason="BAD_CATEGORY_SCORES",
                field=f"{field}[{i}].probability",
            )
        seen.add(s.category)
        probs[s.category - 1] = s.probability
    total = sum(probs)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise InvalidArgument(
            f"{field} sum to {total:.4f}; they must sum to 1 (within {SUM_TOLERANCE})",
            reason="BAD_CATEGORY_SCORES",
            field=field,
        )
    if not (math.isfinite(followup) and 0.0 <= followup <= 1.0):
        raise InvalidArgument(
            f"{where}.followup_probability is {followup}; it must be in [0, 1]",
            reason="BAD_CATEGORY_SCORES",
            field=f"{where}.followup_probability",
        )
    return tuple(p / total for p in probs), followup


def emotion_signal(e: common_pb2.EmotionResult) -> EmotionSignal:
    state = common_pb2.LearningState.Name(e.learning_state).removeprefix("LEARNING_STATE_").lower()
    trajectory = common_pb2.Trajectory.Name(e.trajectory).removeprefix("TRAJECTORY_").lower()
    return EmotionSignal(
        learning_state=LearningState(state) if state in LearningState._value2member_map_ else LearningState.UNSPECIFIED,
        trajectory=Trajectory(trajectory) if trajectory in Trajectory._value2member_map_ else Trajectory.UNSPECIFIED,
        primary=e.primary_emotion,
        confidence=e.confidence,
        scores={s.label: s.probability for s in e.scores},
        state_scores=dict(e.learning_state_scores),
    )


def analyze_scores(response: emotion_pb2.AnalyzeResponse) -> tuple[tuple[float, ...], float, str] | None:
    """Category scores from the emotion service's answer (None when its model has no category head)."""
    result = response.result
    if not result.category_scores:
        return None
    probs, followup = category_scores(result.category_scores, result.followup_probability, "result")
    return probs, followup, result.model_version


def evidence_from(response: emotion_pb2.AnalyzeResponse) -> EmotionEvidence:
    """The router's own analysis (analyze_emotion) as domain types; the result itself is kept to hand back."""
    scored = analyze_scores(response)
    scores = None if scored is None else CategoryScores(scored[0], scored[1], CategorySource.EMOTION_SERVICE, scored[2])
    return EmotionEvidence(emotion_signal(response.result), scores, response.result)


SPECULATION_ENUM = {
    Speculation.NONE: router_pb2.SPECULATION_UNSPECIFIED,
    Speculation.CONFIRMED: router_pb2.SPECULATION_CONFIRMED,
    Speculation.SWITCHED: router_pb2.SPECULATION_SWITCHED,
    Speculation.NO_ANALYSIS: router_pb2.SPECULATION_NO_ANALYSIS,
    Speculation.NOT_STARTED: router_pb2.SPECULATION_NOT_STARTED,
}


def route_request(req: router_pb2.GenerateRequest) -> RouteRequest:
    """Validate a GenerateRequest and convert it (INVALID_ARGUMENT names the field at fault)."""
    if not req.messages:
        raise InvalidArgument(
            "messages is empty: send at least one user message", reason="NO_MESSAGES", field="messages"
        )
    if len(req.messages) > MAX_MESSAGES:
        raise InvalidArgument(f"at most {MAX_MESSAGES} messages", reason="TOO_MANY_MESSAGES", field="messages")
    for i, m in enumerate(req.messages):
        if m.role not in ROLES:
            raise InvalidArgument(
                f"messages[{i}].role is {m.role!r}; use system, user or assistant",
                reason="BAD_ROLE",
                field=f"messages[{i}].role",
            )
        if len(m.content) > MAX_MESSAGE_CHARS:
            raise InvalidArgument(
                f"messages[{i}] is longer than {MAX_MESSAGE_CHARS} characters",
                reason="MESSAGE_TOO_LONG",
                field=f"messages[{i}].content",
            )
    last = req.messages[-1]
    if last.role != "user":
        raise InvalidArgument("the last message must be the user's", reason="LAST_NOT_USER", field="messages")
    if not last.content.strip():
        raise InvalidArgument("the last user message is empty", reason="EMPTY_MESSAGE", field="messages")
    if req.HasField("cost_quality") and not (0.0 <= req.cost_quality <= 1.0 and math.isfinite(req.cost_quality)):
        raise InvalidArgument("cost_quality must be in [0, 1]", reason="BAD_COST_QUALITY", field="cost_quality")
    if req.max_tokens < 0:
        raise InvalidArgument("max_tokens must be >= 0", reason="BAD_MAX_TOKENS", field="max_tokens")
    if req.HasField("temperature") and not (0.0 <= req.temperature <= 2.0 and math.isfinite(req.temperature)):
        raise InvalidArgument("temperature must be in [0, 2]", reason="BAD_TEMPERATURE", field="temperature")
    if req.category and not 1 <= req.category <= len(CATEGORIES):
        raise InvalidArgument(f"unknown category {req.category}", reason="BAD_CATEGORY", field="category")
    complexity: float | None = None
    max_tokens = req.max_tokens or None
    if req.HasField("budget"):
        c = req.budget.complexity
        if not (math.isfinite(c) and 0.0 <= c <= 1.0):
            raise InvalidArgument(
                f"budget.complexity is {c}; it must be in [0, 1]", reason="BAD_COMPLEXITY", field="budget.complexity"
            )
        complexity = c
        if req.budget.answer_tokens < 0:
            raise InvalidArgument(
                "budget.answer_tokens must be >= 0", reason="BAD_MAX_TOKENS", field="budget.answer_tokens"
            )
        if req.budget.answer_tokens > 0:
            max_tokens = min(max_tokens or req.budget.answer_tokens, req.budget.answer_tokens)
    scores: CategoryScores | None = None
    emotion: EmotionSignal | None = None
    if req.HasField("emotion"):
        emotion = emotion_signal(req.emotion)
        if req.emotion.category_scores:
            probs, followup = category_scores(req.emotion.category_scores, req.emotion.followup_probability, "emotion")
            scores = CategoryScores(probs, followup, CategorySource.REQUEST, req.emotion.model_version)
    chat = ChatRequest(
        tuple(Message(m.role, m.content) for m in req.messages),
        max_tokens=max_tokens,
        temperature=req.temperature if req.HasField("temperature") else None,
        stop=tuple(req.stop),
    )
    return RouteRequest(
        chat=chat,
        user_id=req.user_id,
        session_id=req.session_id,
        category_hint=CATEGORIES[req.category - 1] if req.category else "",
        category_scores=scores,
        emotion=emotion,
        pinned=req.pinned_provider,
        cost_quality=req.cost_quality if req.HasField("cost_quality") else None,
        complexity=complexity,
        purpose=router_pb2.Purpose.Name(req.purpose).removeprefix("PURPOSE_").lower(),
        analyze=req.analyze_emotion and not req.HasField("emotion"),
    )


def candidate_message(c: Candidate) -> router_pb2.Candidate:
    return router_pb2.Candidate(
        provider=c.provider,
        model=c.model,
        score=c.score,
        quality=c.score_obj.quality,
        speed=c.score_obj.speed,
        cost=c.score_obj.cost,
        breaker_state=c.breaker.value,
        excluded=c.excluded,
        reason=c.reason,
        score_source=c.score_obj.label,
    )


def decision_message(plan: Plan) -> router_pb2.RoutingDecision:
    d: Decision = plan.decision
    return router_pb2.RoutingDecision(
        provider=d.provider,
        model=d.candidates[0].model if d.candidates else "",
        category=category_enum(d.topic.category),
        category_confidence=d.category.probabilities[CATEGORIES.index(d.topic.category)],
        empathy_override=bool(d.empathy),
        continuity=d.continuity,
        topic_changed=d.topic.changed,
        candidates=[candidate_message(c) for c in d.candidates],
        reasons=d.reasons,
        decision_ms=plan.decision_ms,
        complexity=d.complexity.value,
        complexity_source=d.complexity.source.value,
        cost_quality_used=d.knob_used,
        category_source=d.category.source.value,
        escalated=d.escalation.active,
        ranking_category=category_enum(d.ranking_category),
        speculation=SPECULATION_ENUM[plan.speculation],
    )


def usage_message(usage: Usage, cost: float, provider: str, model: str) -> common_pb2.Usage:
    return common_pb2.Usage(
        tokens=common_pb2.TokenUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            estimated=usage.estimated,
        ),
        cost_usd=cost,
        provider=provider,
        model=model,
    )


def response_message(plan: Plan, a: Answer, decision: router_pb2.RoutingDecision) -> router_pb2.GenerateResponse:
    return router_pb2.GenerateResponse(
        emotion=plan.evidence.result if plan.evidence is not None else None,
        text=a.text,
        provider=a.provider,
        model=a.model,
        decision=decision,
        usage=usage_message(a.usage, a.cost_usd, a.provider, a.model),
        latency_ms=a.latency_ms,
        ttft_ms=a.ttft_ms,
        finish_reason=a.finish_reason,
        attempts=[
            router_pb2.Attempt(provider=t.provider, outcome=t.outcome, error=t.error, latency_ms=t.latency_ms)
            for t in a.attempts
        ],
    )


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """Every RPC: convert, call the app's router, convert back. Before start: UNAVAILABLE."""

    def __init__(self, app: RouterApp) -> None:
        self.app = app

    async def Generate(
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.GenerateResponse:
        router = self.app.router
        plan, answer = await router.generate(route_request(request), context.time_remaining())
        return response_message(plan, answer, decision_message(plan))

    async def GenerateStream(
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        router = self.app.router
        decision: router_pb2.RoutingDecision | None = None
        plan: Plan | None = None
        async for item in router.generate_stream(route_request(request), context.time_remaining()):
            if isinstance(item, Plan):
                plan, decision = item, decision_message(item)
                yield router_pb2.GenerateChunk(decision=decision)
            elif isinstance(item, str):
                yield router_pb2.GenerateChunk(delta=item)
            else:
                assert plan is not None and decision is not None
                yield router_pb2.GenerateChunk(done=response_message(plan, item, decision))

    async def Route(
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RoutingDecision:
        router = self.app.router
        return decision_message(await router.route(route_request(request)))

    async def ListProviders(
        self, request: router_pb2.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListProvidersResponse:
        breakers, cfg = self.app.breakers, self.app.cfg
        if breakers is None:
            raise Unavailable("the router is starting (not SERVING yet); retry shortly", reason="NOT_READY")
        out = router_pb2.ListProvidersResponse()
        for spec in self.app.specs:
            view = breakers.views[spec.name]
            out.providers.add(
                name=spec.name,
                kind=spec.kind,
                model=spec.model,
                breaker_state=breakers.state_for_ranking(spec.name).value,
                failure_rate=view.failure_rate,
                window_calls=view.window_calls,
                input_price_per_mtok=spec.input_price_per_mtok,
                output_price_per_mtok=spec.output_price_per_mtok,
                context_window=spec.context_window,
                max_output_tokens=spec.max_output_tokens,
                consecutive_trips=view.trips,
                open_until=view.open_until,
                daily_budget_usd=spec.daily_budget_usd or cfg.provider_daily_budget_usd,
            )
        return out

    async def GetCosts(
        self, request: router_pb2.GetCostsRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.GetCostsResponse:
        until = parse_day(request.until_day, "until_day") if request.until_day else utc_day()
        since = (
            parse_day(request.since_day, "since_day")
            if request.since_day
            else (dt.date.fromisoformat(until) - dt.timedelta(days=30)).isoformat()
        )
        if since > until:
            raise InvalidArgument(
                f"since_day {since} is after until_day {until}", reason="BAD_RANGE", field="since_day"
            )
        rows = await self.app.router.ledger.costs(request.user_id, request.provider, since, until)
        out = router_pb2.GetCostsResponse()
        for r in rows:
            out.rows.add(
                day=r.day,
                user_id=r.user_id,
                provider=r.provider,
                requests=r.requests,
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                cost_usd=r.cost_usd,
            )
        out.total_cost_usd = sum(r.cost_usd for r in rows)
        out.total_tokens = sum(r.input_tokens + r.output_tokens for r in rows)
        out.total_requests = sum(r.requests for r in rows)
        return out

    async def GetSession(
        self, request: router_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.Session:
        if not request.session_id:
            raise InvalidArgument("session_id is required", reason="NO_SESSION_ID", field="session_id")
        session, ttl = await self.app.router.sessions.load_with_ttl(request.session_id)
        if session is None:
            raise NotFound(f"no session {request.session_id!r} (never routed, or expired)", reason="UNKNOWN_SESSION")
        return router_pb2.Session(
            session_id=session.session_id,
            provider=session.provider,
            category=category_enum(session.category) if session.category in CATEGORIES else 0,  # type: ignore[arg-type]
            provider_history=session.provider_history,
            topic_history=[category_enum(c) for c in session.topic_history if c in CATEGORIES],
            turns=session.turns,
            ttl_seconds=ttl,
        )
