"""The router's core: validate, decide (category, emotion, session, scores, breakers, budgets),
then generate with fallback down the ranked list.

Failure policy (what LiteLLM users miss):
* Fallback: any provider failure moves on to the next eligible candidate, for streams too, as
  long as nothing has been sent to the client; a stream that breaks or stays silent past the
  first-token timeout before its first delta is just another failure.
* Retries of the same provider only for transient failures (5xx, 429, dropped connection),
  only when no other candidate is left (pinned request or last candidate; otherwise the next
  provider is the faster remedy), with exponential backoff and full jitter, honouring
  ``retry-after`` up to the cap, and never when the backoff would cross the deadline. Never
  after a stream started, never for auth, bad request or timeout.
* The request deadline (the caller's gRPC deadline, capped by ROUTER_REQUEST_TIMEOUT_SECONDS)
  bounds every attempt's timeout, so a hanging provider can never eat more than what is left.
* Every outcome is recorded in the provider's breaker (bad requests and cancellations are
  ignored, not failures), so repeated failures stop being tried across all replicas.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2
from masterx_runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from masterx_runtime.logs import request_id_var
from services.router import metrics
from services.router.breaker import OPEN, BreakerBoard, Permit
from services.router.classifier.model import CATEGORIES, CATEGORY_ENUM, ENUM_CATEGORY, CategoryClassifier
from services.router.config import RouterSettings
from services.router.ledger import Charge, CostLedger, RateLimiter
from services.router.providers.base import (
    ChatRequest,
    Completion,
    Message,
    Provider,
    ProviderError,
    ProviderTimeout,
    ServerError,
    StreamBroken,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    Usage,
)
from services.router.scores import ScoreBook
from services.router.selection import Ranked, move_to_front, rank
from services.router.sessions import SessionState, SessionStore, TopicVerdict, advance, judge_topic

log = logging.getLogger("masterx.router")

ROLES = ("system", "user", "assistant")
NEGATIVE_EMOTIONS = frozenset(
    {"sadness", "fear", "nervousness", "grief", "disappointment", "remorse", "anger", "annoyance", "embarrassment"}
)
EMPATHY_STATES = (common_pb2.LEARNING_STATE_FRUSTRATED, common_pb2.LEARNING_STATE_ANXIOUS)
MAX_MESSAGES = 200
MAX_MESSAGE_CHARS = 200_000


@dataclass
class Plan:
    """A routing decision plus what generation needs to carry it out."""

    decision: router_pb2.RoutingDecision
    order: list[str]
    chat: ChatRequest
    session: SessionState | None
    verdict: TopicVerdict
    probabilities: list[float]
    pinned: bool
    request: router_pb2.GenerateRequest
    attempts: list[router_pb2.Attempt] = field(default_factory=list)


def empathy_reason(emotion: common_pb2.EmotionResult, threshold: float) -> str:
    """Why this emotion result calls for the empathy ranking ('' when it does not)."""
    if emotion.learning_state in EMPATHY_STATES:
        return f"learning state {common_pb2.LearningState.Name(emotion.learning_state).removeprefix('LEARNING_STATE_').lower()}"
    strongest = max(
        ((s.probability, s.label) for s in emotion.scores if s.label in NEGATIVE_EMOTIONS),
        default=(0.0, ""),
    )
    if emotion.primary_emotion in NEGATIVE_EMOTIONS and emotion.confidence > strongest[0]:
        strongest = (emotion.confidence, emotion.primary_emotion)
    if strongest[1] and strongest[0] >= threshold:
        return f"strong negative emotion {strongest[1]} ({strongest[0]:.2f})"
    return ""


class Router:
    def __init__(
        self,
        cfg: RouterSettings,
        providers: Mapping[str, Provider],
        *,
        breakers: BreakerBoard,
        sessions: SessionStore,
        book: ScoreBook,
        ledger: CostLedger,
        limiter: RateLimiter,
        classifier: CategoryClassifier,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.providers = dict(providers)
        self.breakers = breakers
        self.sessions = sessions
        self.book = book
        self.ledger = ledger
        self.limiter = limiter
        self.classifier = classifier
        self.rng = rng or random.Random()
        self._budgets = {
            name: (p.spec.daily_budget_usd if p.spec.daily_budget_usd else cfg.provider_daily_budget_usd)
            for name, p in self.providers.items()
        }

    # ------------------------------------------------------------------ validation

    def validate(self, req: router_pb2.GenerateRequest) -> ChatRequest:
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
        if req.HasField("cost_quality") and not 0.0 <= req.cost_quality <= 1.0:
            raise InvalidArgument("cost_quality must be in [0, 1]", reason="BAD_COST_QUALITY", field="cost_quality")
        if req.max_tokens < 0:
            raise InvalidArgument("max_tokens must be >= 0", reason="BAD_MAX_TOKENS", field="max_tokens")
        if req.HasField("temperature") and not (0.0 <= req.temperature <= 2.0 and math.isfinite(req.temperature)):
            raise InvalidArgument("temperature must be in [0, 2]", reason="BAD_TEMPERATURE", field="temperature")
        if req.category and req.category not in ENUM_CATEGORY:
            raise InvalidArgument(f"unknown category {req.category}", reason="BAD_CATEGORY", field="category")
        max_tokens = req.max_tokens or None
        if req.HasField("budget") and req.budget.answer_tokens > 0:
            max_tokens = min(max_tokens or req.budget.answer_tokens, req.budget.answer_tokens)
        return ChatRequest(
            tuple(Message(m.role, m.content) for m in req.messages),
            max_tokens=max_tokens,
            temperature=req.temperature if req.HasField("temperature") else None,
            stop=tuple(req.stop),
        )

    # ------------------------------------------------------------------ deciding

    async def plan(self, req: router_pb2.GenerateRequest) -> Plan:
        started = time.perf_counter()
        chat = self.validate(req)
        if req.pinned_provider and req.pinned_provider not in self.providers:
            raise NotFound(
                f"pinned_provider {req.pinned_provider!r} is not configured (known: {', '.join(sorted(self.providers))})",
                reason="UNKNOWN_PROVIDER",
                field="pinned_provider",
            )
        reasons: list[str] = []
        followup = 0.0
        if req.category:
            category, confidence = ENUM_CATEGORY[req.category], 1.0
            probabilities = [1.0 if c == category else 0.0 for c in CATEGORIES]
            reasons.append(f"category {category} from the request's hint")
        else:
            prediction = self.classifier.predict(chat.messages[-1].content)
            category, confidence = prediction.category, prediction.confidence
            probabilities = prediction.probabilities.tolist()
            followup = prediction.followup
            reasons.append(f"classifier: {category} ({confidence:.2f}; follow-up {followup:.2f})")

        needs_spend = bool(req.user_id and self.cfg.user_daily_budget_usd > 0) or any(self._budgets.values())
        session, (user_spent, provider_spent) = await asyncio.gather(
            self._load_session(req.session_id, reasons), self._spend(req.user_id, needs_spend, reasons)
        )
        if req.user_id and 0 < self.cfg.user_daily_budget_usd <= user_spent:
            raise ResourceExhausted(
                f"user {req.user_id!r} spent ${user_spent:.4f} today; the daily budget is ${self.cfg.user_daily_budget_usd:.4f}",
                reason="BUDGET_EXCEEDED",
                field="user_id",
            )

        if session is not None:
            verdict = judge_topic(
                session,
                category,
                confidence,
                probabilities,
                min_confidence=self.cfg.topic_min_confidence,
                similarity_threshold=self.cfg.topic_similarity,
                followup=followup,
            )
            reasons.append(verdict.reason)
        else:
            verdict = TopicVerdict(False, category, "no session")
        ranking_category = verdict.category
        empathy = empathy_reason(req.emotion, self.cfg.empathy_negative_threshold) if req.HasField("emotion") else ""
        if empathy:
            ranking_category = "empathy"
            reasons.append(f"empathy ranking: {empathy}")

        exclusions: dict[str, str] = {}
        for name, provider in self.providers.items():
            budget = self._budgets[name]
            if budget and provider_spent.get(name, 0.0) >= budget:
                exclusions[name] = f"daily budget ${budget:.4f} spent"
            elif not provider.ready():
                reason = getattr(provider, "unavailable_reason", lambda: "")() or "not ready"
                exclusions[name] = f"not ready: {reason}"
        knob = req.cost_quality if req.HasField("cost_quality") else self.cfg.default_cost_quality
        names = [req.pinned_provider] if req.pinned_provider else list(self.providers)
        ranked = rank(
            names,
            ranking_category,
            knob,
            self.book,
            breaker_states={n: self.breakers.state_for_ranking(n) for n in names},
            exclusions=exclusions,
            min_quality=self.cfg.min_quality,
        )
        continuity = False
        if req.pinned_provider:
            self._check_pinned(ranked[0])
            reasons.append(f"pinned to {req.pinned_provider}: no fallback")
        elif session is not None and session.provider and not verdict.changed and not empathy:
            if session.provider not in self.providers:
                reasons.append(f"session provider {session.provider} is no longer configured: re-routed")
            elif move_to_front(ranked, session.provider, "continuity"):
                continuity = True
                reasons.append(f"continuity: staying with {session.provider} while the topic holds")
            else:
                why = exclusions.get(session.provider) or "breaker open"
                reasons.append(f"session provider {session.provider} unavailable ({why}): re-routed")
        order = [r.provider for r in ranked if not r.excluded]
        if not order:
            if all("budget" in exclusions.get(r.provider, "") for r in ranked):
                raise ResourceExhausted("every provider's daily budget is spent", reason="BUDGET_EXCEEDED")
            raise Unavailable(
                "no provider can take the request: " + "; ".join(f"{r.provider}: {r.reason}" for r in ranked),
                reason="NO_PROVIDER",
                dependency="providers",
            )
        reasons.append(f"chose {order[0]} for {ranking_category} (cost_quality {knob:.2f})")
        decision = router_pb2.RoutingDecision(
            provider=order[0],
            model=self.providers[order[0]].spec.model,
            category=CATEGORY_ENUM[verdict.category],
            category_confidence=probabilities[CATEGORIES.index(verdict.category)],
            empathy_override=bool(empathy),
            continuity=continuity,
            topic_changed=verdict.changed,
            candidates=[_candidate(r) for r in ranked],
            reasons=reasons,
        )
        elapsed = time.perf_counter() - started
        decision.decision_ms = elapsed * 1000
        metrics.DECISION_SECONDS.observe(elapsed)
        return Plan(decision, order, chat, session, verdict, probabilities, bool(req.pinned_provider), req)

    async def _load_session(self, session_id: str, reasons: list[str]) -> SessionState | None:
        """The session (None without an id); a Redis outage degrades to routing without it."""
        if not session_id:
            return None
        try:
            return await self.sessions.load(session_id)
        except (RedisError, OSError, ValueError) as exc:
            log.error("session unavailable; routing without it", extra={"error": f"{type(exc).__name__}: {exc}"})
            reasons.append("session store unavailable: routed without continuity")
            return None

    async def _spend(self, user_id: str, needed: bool, reasons: list[str]) -> tuple[float, dict[str, float]]:
        """Today's spend for the budget checks; an unreadable store fails open (logged)."""
        if not needed:
            return 0.0, {}
        try:
            return await self.ledger.spend_today(user_id, self.providers)
        except (RedisError, OSError, PyMongoError) as exc:
            log.error("spend unavailable; budgets not enforced for this request", extra={"error": str(exc)})
            reasons.append("spend counters unavailable: budgets not checked")
            return 0.0, {}

    def _check_pinned(self, r: Ranked) -> None:
        if not r.excluded:
            return
        if r.breaker_state == OPEN:
            raise FailedPrecondition(
                f"pinned provider {r.provider}'s circuit breaker is open; pinned requests never fall back",
                reason="BREAKER_OPEN",
                field="pinned_provider",
            )
        if "budget" in r.reason:
            raise ResourceExhausted(f"pinned provider {r.provider}: {r.reason}", reason="BUDGET_EXCEEDED")
        raise Unavailable(
            f"pinned provider {r.provider}: {r.reason}", reason="PROVIDER_NOT_READY", dependency=r.provider
        )

    # ------------------------------------------------------------------ generating

    def deadline(self, time_remaining: float | None) -> float:
        """The caller's deadline when it set one, else ROUTER_REQUEST_TIMEOUT_SECONDS."""
        budget = self.cfg.request_timeout_seconds if time_remaining is None else max(time_remaining, 0.0)
        return asyncio.get_running_loop().time() + budget

    async def generate(
        self, req: router_pb2.GenerateRequest, time_remaining: float | None
    ) -> router_pb2.GenerateResponse:
        deadline = self.deadline(time_remaining)
        plan = await self.plan(req)
        for index, name in enumerate(plan.order):
            retries = 0
            while _tries(plan) < self.cfg.max_attempts:
                self._check_deadline(plan, deadline)
                permit = await self._admit(plan, name)
                if permit is None:
                    break
                result = await self._complete_once(plan, name, permit, deadline)
                if isinstance(result, Completion):
                    return await self._finish(plan, name, result)
                if not await self._retry_pause(plan, result, index, retries, deadline):
                    break
                retries += 1
        raise self._exhausted(plan, deadline)

    async def generate_stream(
        self, req: router_pb2.GenerateRequest, time_remaining: float | None
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        deadline = self.deadline(time_remaining)
        plan = await self.plan(req)
        yield router_pb2.GenerateChunk(decision=plan.decision)
        loop = asyncio.get_running_loop()
        for index, name in enumerate(plan.order):
            retries = 0
            while _tries(plan) < self.cfg.max_attempts:
                self._check_deadline(plan, deadline)
                permit = await self._admit(plan, name)
                if permit is None:
                    break
                provider = self.providers[name]
                attempt_deadline = loop.time() + self._attempt_timeout(provider, deadline)
                started = time.perf_counter()
                events = provider.stream(plan.chat, attempt_deadline - loop.time())
                try:
                    first = await self._first_event(events, name, attempt_deadline)
                except ProviderError as err:
                    await events.aclose()
                    await self._fail(plan, name, permit, err, started)
                    if not await self._retry_pause(plan, err, index, retries, deadline):
                        break
                    retries += 1
                    continue
                except BaseException:
                    await events.aclose()
                    await self._release(name, permit)
                    raise
                ttft = (time.perf_counter() - started) * 1000
                parts: list[str] = []
                event: StreamEvent = first
                pump: asyncio.Task[None] | None = None
                try:
                    if isinstance(event, StreamDelta):
                        parts.append(event.text)
                        yield router_pb2.GenerateChunk(delta=event.text)
                        box = _Mailbox()
                        pump = asyncio.create_task(self._pump(events, name, attempt_deadline, box))
                        event = await box.take(parts)
                        while isinstance(event, StreamDelta):
                            yield router_pb2.GenerateChunk(delta=event.text)
                            event = await box.take(parts)
                except ProviderError as err:
                    await self._fail(plan, name, permit, err, started)
                    sent = sum(map(len, parts))
                    if loop.time() >= deadline:
                        raise DeadlineExceeded(
                            f"deadline passed while {name} was streaming ({sent} characters sent)", dependency=name
                        ) from None
                    raise Unavailable(
                        f"{name} failed after the answer started streaming ({sent} characters sent; "
                        f"no fallback once text reached the client): {err.message}",
                        reason="STREAM_BROKEN",
                        dependency=name,
                    ) from None
                except BaseException:
                    await self._release(name, permit)
                    raise
                finally:
                    if pump is not None:
                        pump.cancel()
                        await asyncio.gather(pump, return_exceptions=True)
                    await events.aclose()
                assert isinstance(event, StreamEnd)
                latency = (time.perf_counter() - started) * 1000
                completion = Completion("".join(parts), event.usage, event.finish_reason, event.model, latency, ttft)
                await self.breakers.record(name, permit, ok=True, seconds=latency / 1000)
                response = await self._finish(plan, name, completion)
                yield router_pb2.GenerateChunk(done=response)
                return
        raise self._exhausted(plan, deadline)

    async def route(self, req: router_pb2.GenerateRequest) -> router_pb2.RoutingDecision:
        return (await self.plan(req)).decision

    # ------------------------------------------------------------------ attempts

    def _attempt_timeout(self, provider: Provider, deadline: float) -> float:
        limit = provider.spec.timeout_seconds or self.cfg.attempt_timeout_seconds
        return max(min(limit, deadline - asyncio.get_running_loop().time()), 0.001)

    def _check_deadline(self, plan: Plan, deadline: float) -> None:
        if asyncio.get_running_loop().time() >= deadline - 0.001:
            tried = ", ".join(f"{a.provider} ({a.outcome})" for a in plan.attempts) or "none"
            raise DeadlineExceeded(f"the request deadline passed before an answer was complete (tried: {tried})")

    async def _admit(self, plan: Plan, name: str) -> Permit | None:
        """Breaker permission and the provider's rate limit; None (with an Attempt noted) when refused."""
        permit = await self.breakers.acquire(name)
        if not permit.allowed:
            if plan.pinned:
                raise FailedPrecondition(
                    f"pinned provider {name}'s circuit breaker is {permit.state} and takes no more calls now",
                    reason="BREAKER_OPEN",
                    field="pinned_provider",
                )
            self._note(plan, name, "breaker_open", f"breaker {permit.state}", 0.0)
            return None
        why = await self.limiter.admit(name)
        if why:
            await self._release(name, permit)
            self._note(plan, name, "rate_limited", why, 0.0)
            return None
        return permit

    async def _complete_once(
        self, plan: Plan, name: str, permit: Permit, deadline: float
    ) -> Completion | ProviderError:
        provider = self.providers[name]
        timeout = self._attempt_timeout(provider, deadline)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout + 0.05):
                completion = await provider.complete(plan.chat, timeout)
        except TimeoutError:
            err: ProviderError = ProviderTimeout(name, f"no answer within {timeout:.2f}s")
        except ProviderError as exc:
            err = exc
        except asyncio.CancelledError:
            await self._release(name, permit)
            raise
        except Exception as exc:  # an adapter bug must not break fallback
            log.exception("provider raised an unexpected error", extra={"provider": name})
            err = ServerError(name, f"unexpected {type(exc).__name__}")
        else:
            await self.breakers.record(name, permit, ok=True, seconds=time.perf_counter() - started)
            return completion
        await self._fail(plan, name, permit, err, started)
        return err

    async def _first_event(
        self, events: AsyncGenerator[StreamEvent, None], name: str, attempt_deadline: float
    ) -> StreamEvent:
        loop = asyncio.get_running_loop()
        first_deadline = min(attempt_deadline, loop.time() + self.cfg.first_token_timeout_seconds)
        try:
            async with asyncio.timeout_at(first_deadline):
                return await anext(events)
        except TimeoutError:
            raise ProviderTimeout(name, "no first token before the timeout") from None
        except StopAsyncIteration:
            raise StreamBroken(name, "stream ended before any event") from None
        except ProviderError:
            raise
        except Exception as exc:
            log.exception("provider stream raised an unexpected error", extra={"provider": name})
            raise ServerError(name, f"unexpected {type(exc).__name__}") from None

    async def _pump(
        self, events: AsyncGenerator[StreamEvent, None], name: str, attempt_deadline: float, box: _Mailbox
    ) -> None:
        """Read the provider's stream into ``box`` until its end (a failure is posted too)."""
        try:
            async with asyncio.timeout_at(attempt_deadline):
                async for event in events:
                    box.post(event)
                    if isinstance(event, StreamEnd):
                        return
            box.post(StreamBroken(name, "stream ended without its end event"))
        except TimeoutError:
            box.post(ProviderTimeout(name, "stream stalled past the attempt deadline"))
        except ProviderError as err:
            box.post(err)
        except Exception as exc:
            log.exception("provider stream raised an unexpected error", extra={"provider": name})
            box.post(StreamBroken(name, f"unexpected {type(exc).__name__}"))

    async def _fail(self, plan: Plan, name: str, permit: Permit, err: ProviderError, started: float) -> None:
        seconds = time.perf_counter() - started
        await self.breakers.record(name, permit, ok=False, seconds=seconds, ignored=not err.counts_as_failure)
        self._note(plan, name, err.outcome, err.message, seconds * 1000)
        log.warning(
            "provider attempt failed",
            extra={
                "provider": name,
                "outcome": err.outcome,
                "error": err.message,
                "latency_ms": round(seconds * 1000, 1),
            },
        )

    async def _release(self, name: str, permit: Permit) -> None:
        """Give back a HALF_OPEN trial permit that produced no verdict (cancelled, rate-limited)."""
        if permit.trial:
            await asyncio.shield(self.breakers.record(name, permit, ok=True, seconds=0.0, ignored=True))

    def _note(self, plan: Plan, name: str, outcome: str, error: str, latency_ms: float) -> None:
        plan.attempts.append(router_pb2.Attempt(provider=name, outcome=outcome, error=error, latency_ms=latency_ms))
        metrics.ATTEMPTS.labels(name, outcome).inc()

    async def _retry_pause(self, plan: Plan, err: ProviderError, index: int, retries: int, deadline: float) -> bool:
        """Sleep before retrying the same provider, or return False to move on."""
        last_candidate = plan.pinned or index == len(plan.order) - 1
        if not (err.retryable and last_candidate and retries < self.cfg.retries_per_provider):
            return False
        if self.breakers.check(err.provider) == OPEN or _tries(plan) >= self.cfg.max_attempts:
            return False
        cap = min(self.cfg.retry_backoff_max_ms, self.cfg.retry_backoff_base_ms * 2**retries) / 1000
        pause = self.rng.uniform(0, cap)
        if err.retry_after:
            pause = max(pause, min(err.retry_after, self.cfg.retry_backoff_max_ms / 1000))
        if asyncio.get_running_loop().time() + pause >= deadline - 0.01:
            return False
        await asyncio.sleep(pause)
        return True

    def _exhausted(self, plan: Plan, deadline: float) -> Exception:
        tried = ", ".join(f"{a.provider} ({a.outcome}: {a.error})" for a in plan.attempts) or "none"
        outcomes = {a.outcome for a in plan.attempts}
        if asyncio.get_running_loop().time() >= deadline - 0.01:
            return DeadlineExceeded(f"the request deadline passed before an answer was complete (tried: {tried})")
        if outcomes == {"rate_limited"}:
            return ResourceExhausted(f"every candidate is rate-limited: {tried}", reason="RATE_LIMITED")
        if plan.pinned and outcomes <= {"bad_request"} and outcomes:
            return InvalidArgument(f"the provider refused the request: {tried}", reason="PROVIDER_BAD_REQUEST")
        return Unavailable(
            f"every candidate provider failed: {tried}", reason="ALL_PROVIDERS_FAILED", dependency="providers"
        )

    # ------------------------------------------------------------------ bookkeeping

    async def _finish(self, plan: Plan, name: str, done: Completion) -> router_pb2.GenerateResponse:
        provider = self.providers[name]
        req = plan.request
        cost = provider.spec.cost_usd(done.usage)
        self._note(plan, name, "ok", "", done.latency_ms)
        if name != plan.order[0]:
            metrics.FALLBACKS.inc()
        metrics.TOKENS.labels(name, "input").inc(done.usage.input_tokens)
        metrics.TOKENS.labels(name, "output").inc(done.usage.output_tokens)
        metrics.COST.labels(name).inc(cost)
        metrics.PROVIDER_TTFT.labels(name).observe(done.ttft_ms / 1000)
        charge = Charge(
            user_id=req.user_id,
            provider=name,
            model=done.model or provider.spec.model,
            input_tokens=done.usage.input_tokens,
            output_tokens=done.usage.output_tokens,
            estimated=done.usage.estimated,
            cost_usd=cost,
            purpose=router_pb2.Purpose.Name(req.purpose).removeprefix("PURPOSE_").lower(),
            session_id=req.session_id,
            latency_ms=done.latency_ms,
            request_id=request_id_var.get(),
        )
        self.ledger.submit(charge)
        await asyncio.gather(
            self._safe(self.limiter.add_tokens(name, done.usage.total_tokens), "rate limiter"),
            self._safe(self._save_session(plan, name), "session"),
        )
        return router_pb2.GenerateResponse(
            text=done.text,
            provider=name,
            model=done.model or provider.spec.model,
            decision=plan.decision,
            usage=_usage(done.usage, cost, name, done.model or provider.spec.model),
            latency_ms=done.latency_ms,
            ttft_ms=done.ttft_ms,
            finish_reason=done.finish_reason,
            attempts=plan.attempts,
        )

    async def _save_session(self, plan: Plan, name: str) -> None:
        if plan.session is None:
            return
        updated = advance(plan.session, plan.verdict, plan.probabilities, name, history_limit=self.cfg.session_history)
        await self.sessions.save(updated)

    @staticmethod
    async def _safe(coro: object, what: str) -> None:
        try:
            await coro  # type: ignore[misc]
        except Exception as exc:  # bookkeeping must not fail an answered request
            log.error("bookkeeping failed", extra={"what": what, "error": f"{type(exc).__name__}: {exc}"})


class _Mailbox:
    """Provider events waiting to be sent; ``take`` merges every delta waiting into one.

    When the client side keeps up, each take returns one event as soon as it arrives; when
    sending falls behind, the deltas that queued up meanwhile go out as one message, so a busy
    router sends fewer, larger messages instead of falling further behind. Nothing ever waits
    to be merged.
    """

    def __init__(self) -> None:
        self._items: deque[StreamEvent | ProviderError] = deque()
        self._ready = asyncio.Event()

    def post(self, item: StreamEvent | ProviderError) -> None:
        self._items.append(item)
        self._ready.set()

    async def take(self, parts: list[str]) -> StreamEvent:
        """The next delta (merged; also appended to ``parts``) or the end; raises a posted failure."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        texts: list[str] = []
        while self._items and isinstance(self._items[0], StreamDelta):
            texts.append(self._items.popleft().text)  # type: ignore[union-attr]
        if texts:
            text = "".join(texts)
            parts.append(text)
            return StreamDelta(text)
        item = self._items.popleft()
        if isinstance(item, ProviderError):
            raise item
        return item


def _tries(plan: Plan) -> int:
    """Provider calls actually made (refusals by a breaker or a local rate limit cost nothing)."""
    return sum(1 for a in plan.attempts if a.outcome not in ("breaker_open", "rate_limited") or a.latency_ms > 0)


def _candidate(r: Ranked) -> router_pb2.Candidate:
    return router_pb2.Candidate(
        provider=r.provider,
        model=r.model,
        score=r.score,
        quality=r.quality,
        speed=r.speed,
        cost=r.cost,
        breaker_state=r.breaker_state,
        excluded=r.excluded,
        reason=r.reason,
        score_source=r.score_source,
    )


def _usage(usage: Usage, cost: float, provider: str, model: str) -> common_pb2.Usage:
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
