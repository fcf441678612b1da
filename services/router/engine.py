"""The router's I/O: gather a decision's inputs, carry the decision out with fallback, keep books.

The decision itself is ``decision.decide`` (pure). Failure policy (what LiteLLM users miss):

* Fallback: any provider failure moves on to the next eligible candidate, for streams too, as
  long as nothing has been sent to the client; a stream that breaks or stays silent past the
  first-token timeout before its first delta is just another failure.
* Retries of the same provider only for transient failures (5xx, 429, dropped connection),
  only when no other candidate is left (pinned request or last candidate), with exponential
  backoff and full jitter, honouring ``retry-after`` up to the cap, and never when the backoff
  would cross the deadline. Never after a stream started, never for auth, bad request, timeout.
* Unary calls and the time to a stream's first token are bounded by the attempt timeout and
  the request deadline (the caller's gRPC deadline, else ROUTER_REQUEST_TIMEOUT_SECONDS). Once a
  stream has started, only the idle time between tokens (ROUTER_STREAM_IDLE_TIMEOUT_SECONDS) and
  the caller's own deadline bound it: a healthy long answer is never cut for its length.
* Every outcome is recorded in the provider's breaker (bad requests and cancellations are
  ignored, not failures), so repeated failures stop being tried across all replicas.

Unary and streaming share one attempt loop (``_attempt_loop``); they differ only in what one
attempt is (``_complete_once`` vs ``_open_stream``).

Speculative start (requests with ``analyze``, ROUTER_SPECULATE): the router asks the emotion
service for the analysis and, while it runs, already calls the provider it would pick without
it (category from the hint, the request's scores or the TF-IDF classifier). When the analysis
arrives the decision is made again with it; the early call is kept if it picked the same
provider and cancelled otherwise, before any of its text is released. The analysis (a few
milliseconds) almost always arrives long before a provider's first token, so emotion-aware
routing adds no wait; the price of a switch is one cancelled provider request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from masterx_runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from services.router import metrics
from services.router.books import Books
from services.router.breaker import BreakerBoard, Gate, Permit
from services.router.category import CategoryDetector
from services.router.complexity import estimate_complexity
from services.router.config import RouterSettings
from services.router.decision import (
    Complexity,
    Exclusion,
    ExclusionReason,
    Inputs,
    Knobs,
    ProviderView,
    decide,
)
from services.router.domain import (
    Answer,
    Attempt,
    CategoryScores,
    CategorySource,
    ComplexitySource,
    EmotionEvidence,
    RouteRequest,
    Speculation,
)
from services.router.emotion_peer import EmotionPeer
from services.router.ledger import CostLedger, RateLimiter
from services.router.plan import Plan, exhausted, tries
from services.router.policy import Policy
from services.router.providers.base import (
    Completion,
    Provider,
    ProviderError,
    ProviderTimeout,
    ServerError,
    StreamDelta,
    StreamEnd,
    StreamEvent,
)
from services.router.scores import ScoreBook
from services.router.sessions import SessionState, SessionStore
from services.router.streaming import Mailbox, OpenStream, first_event, pump

log = logging.getLogger("masterx.router")

T = TypeVar("T")


#: What GenerateStream yields: the plan first, then text deltas, then the answer.
StreamItem = Plan | str | Answer

#: One provider attempt: (plan, provider name, permit) -> its result or the error it ended in.
Start = Callable[[Plan, str, Permit], Coroutine[Any, Any, T | ProviderError]]
#: An attempt already under way when the attempt loop begins (the speculative start).
Early = tuple[str, "asyncio.Task[T | ProviderError]"]
#: Undo a successful early attempt that the analysis overruled; returns the text it had produced.
Discard = Callable[[str, T], Coroutine[Any, Any, str]]


class Router:
    def __init__(
        self,
        cfg: RouterSettings,
        policy: Policy,
        providers: Mapping[str, Provider],
        *,
        breakers: BreakerBoard,
        sessions: SessionStore,
        book: ScoreBook,
        ledger: CostLedger,
        limiter: RateLimiter,
        detector: CategoryDetector,
        emotion: EmotionPeer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.policy = policy
        self.providers = dict(providers)
        self.breakers = breakers
        self.sessions = sessions
        self.book = book
        self.ledger = ledger
        self.limiter = limiter
        self.detector = detector
        self.emotion = emotion
        self._background: set[asyncio.Task[object]] = set()
        self.rng = rng or random.Random()
        self.knobs = Knobs(
            default_cost_quality=cfg.default_cost_quality,
            min_quality=cfg.min_quality,
            topic_min_confidence=cfg.topic_min_confidence,
            topic_similarity=cfg.topic_similarity,
            empathy_negative_threshold=cfg.empathy_negative_threshold,
            user_daily_budget_usd=cfg.user_daily_budget_usd,
        )
        self.books = Books(cfg, policy, self.providers, ledger=ledger, limiter=limiter, sessions=sessions)
        self._budgets = {
            name: (p.spec.daily_budget_usd if p.spec.daily_budget_usd else cfg.provider_daily_budget_usd)
            for name, p in self.providers.items()
        }

    # ------------------------------------------------------------------ deciding

    async def category(self, req: RouteRequest) -> CategoryScores:
        """Hint > the request's emotion result > the emotion service (only when the request brought
        no emotion result: asking again would run the encoder twice) > the TF-IDF classifier.

        A pinned request is never sent to the emotion service: one candidate ranks the same under
        every category, and its callers (the gateway for a named model, benchmark runs) analyse
        emotion themselves or not at all."""
        if req.category_hint or req.category_scores is not None:
            return self.category_now(req)
        if req.emotion is not None or req.pinned:  # the encoder already ran (no category head) / one candidate
            return self.detector.classify(req.text)
        return await self.detector.detect(req.text)

    def category_now(self, req: RouteRequest) -> CategoryScores:
        """``category`` without asking the emotion service (its analysis is under way already)."""
        if req.category_hint:
            return CategoryScores.one_hot(req.category_hint, CategorySource.HINT)
        return req.category_scores if req.category_scores is not None else self.detector.classify(req.text)

    def complexity(self, req: RouteRequest) -> Complexity:
        if req.complexity is not None:
            return Complexity(req.complexity, ComplexitySource.REQUEST)
        return Complexity(estimate_complexity(req.text, self.policy.estimate), ComplexitySource.ESTIMATED)

    async def plan(self, req: RouteRequest) -> Plan:
        started = time.perf_counter()
        self._check_pinned(req)
        notes: list[str] = []
        category, session, spend = await asyncio.gather(
            self.category(req), self._load_session(req.session_id, notes), self._spend_for(req, notes)
        )
        return self._decide(req, category, session, spend, notes, started)

    def _check_pinned(self, req: RouteRequest) -> None:
        if req.pinned and req.pinned not in self.providers:
            raise NotFound(
                f"pinned_provider {req.pinned!r} is not configured (known: {', '.join(sorted(self.providers))})",
                reason="UNKNOWN_PROVIDER",
                field="pinned_provider",
            )

    async def _spend_for(self, req: RouteRequest, notes: list[str]) -> tuple[float, dict[str, float]]:
        needs_spend = bool(req.user_id and self.cfg.user_daily_budget_usd > 0) or any(self._budgets.values())
        return await self._spend(req.user_id, needs_spend, notes)

    def _decide(
        self,
        req: RouteRequest,
        category: CategoryScores,
        session: SessionState | None,
        spend: tuple[float, Mapping[str, float]],
        notes: list[str],
        started: float,
    ) -> Plan:
        """The pure decision on gathered inputs, as a Plan (``notes``: what degraded while gathering)."""
        user_spent, provider_spent = spend
        views = [
            ProviderView(
                name,
                provider.spec.model,
                self.book.table[name],
                self.breakers.state_for_ranking(name),
                self._exclusion(name, provider, provider_spent),
            )
            for name, provider in self.providers.items()
        ]
        inputs = Inputs(
            category=category,
            text=req.text,
            complexity=self.complexity(req),
            providers=views,
            weights=self.book.weights,
            cost_quality=req.cost_quality,
            emotion=req.emotion,
            session=session,
            pinned=req.pinned,
            user_id=req.user_id,
            user_spent_usd=user_spent,
        )
        decision = decide(inputs, self.policy, self.knobs)
        decision.reasons[1:1] = notes
        elapsed = time.perf_counter() - started
        metrics.DECISION_SECONDS.observe(elapsed)
        return Plan(req, decision, session, elapsed * 1000)

    def analyses(self, req: RouteRequest) -> bool:
        """Whether the router analyses this request's emotion itself (see ``_plan_with_analysis``)."""
        return req.analyze and req.emotion is None and self.emotion is not None and bool(self.emotion.addr)

    async def _plan_for(
        self, req: RouteRequest, deadline: float, start: Start[T], discard: Discard[T] | None
    ) -> tuple[Plan, Early[T] | None]:
        if self.analyses(req):
            return await self._plan_with_analysis(req, deadline, start, discard)
        return await self.plan(req), None

    async def _plan_with_analysis(
        self, req: RouteRequest, deadline: float, start: Start[T], discard: Discard[T] | None
    ) -> tuple[Plan, Early[T] | None]:
        """Plan on the emotion service's analysis, with the speculative start (module docstring).

        Returns the plan and the early attempt to continue with (None when there is none to
        keep: the attempt loop then starts from the plan's first choice). An early attempt the
        analysis overrules is cancelled, or, if it has already succeeded, undone by ``discard``
        (an opened stream whose text nobody has seen); without ``discard`` (a unary answer,
        already paid for) a finished early answer is kept. A cancelled or discarded early call
        is charged: its prompt's tokens (estimated) and what text it had produced.
        """
        assert self.emotion is not None
        started = time.perf_counter()
        self._check_pinned(req)
        loop = asyncio.get_running_loop()
        guessed = self.category_now(req) if self.cfg.speculate else None  # no guess needed without speculating
        speculating = guessed is not None and guessed.confidence >= self.cfg.speculate_min_confidence

        def analyse() -> asyncio.Task[EmotionEvidence | None]:
            assert self.emotion is not None
            return asyncio.create_task(self.emotion.analyze(req, deadline - loop.time()))

        # Without an early call the analysis is what the answer waits for: start it first. With
        # one, the provider call goes out first (the analysis is hidden behind its answer anyway).
        analysis = None if speculating else analyse()
        early: asyncio.Task[T | ProviderError] | None = None
        try:
            notes: list[str] = []
            session, spend = await asyncio.gather(
                self._load_session(req.session_id, notes), self._spend_for(req, notes)
            )
            provisional: Plan | None = None
            guess = ""
            if guessed is not None:
                provisional = self._decide(req, guessed, session, spend, list(notes), started)
                if provisional.order and speculating:
                    guess = provisional.order[0]
                    permit = await self._admit(None, guess)
                    if permit is not None:
                        early = asyncio.create_task(start(provisional, guess, permit))
            if analysis is None:
                analysis = analyse()  # runs after the early call's first step (tasks start in order)
            evidence = await analysis
            final = req.with_evidence(evidence) if evidence is not None else req
            plan = self._decide(final, self.category_now(final), session, spend, notes, started)
            plan.evidence = evidence
            if provisional is not None:
                plan.attempts = provisional.attempts  # one list: the early attempt notes into it
            if not self.cfg.speculate:
                outcome = Speculation.NONE
            elif early is None:
                outcome = Speculation.NOT_STARTED
            elif evidence is not None and plan.order[:1] == [guess]:
                outcome = Speculation.CONFIRMED
            elif evidence is None or (early.done() and discard is None):
                # no analysis, or the early call already answered: keep it and its plan
                assert provisional is not None
                provisional.evidence = evidence
                plan, outcome = provisional, Speculation.NO_ANALYSIS
            else:
                assert provisional is not None
                outcome = Speculation.SWITCHED
                sent = time.perf_counter()
                early.cancel()
                (done,) = await asyncio.gather(early, return_exceptions=True)
                early = None
                produced = ""
                if discard is not None and not isinstance(done, BaseException | ProviderError):
                    produced = await discard(guess, done)
                if not isinstance(done, ProviderError):  # a failed call was booked by _fail already
                    self.books.charge_broken(provisional, guess, produced, sent)
        except BaseException:
            if analysis is not None:
                analysis.cancel()
            if early is not None:
                early.cancel()
                await asyncio.gather(early, return_exceptions=True)
            raise
        plan.speculation = outcome
        metrics.SPECULATION.labels(outcome.value).inc()
        if outcome is Speculation.SWITCHED:
            plan.decision.reasons.append(
                f"early call to {guess} cancelled: the emotion analysis picked another provider"
            )
        return plan, ((guess, early) if early is not None else None)

    def _exclusion(self, name: str, provider: Provider, spent: Mapping[str, float]) -> Exclusion | None:
        budget = self._budgets[name]
        if budget and spent.get(name, 0.0) >= budget:
            return Exclusion(ExclusionReason.BUDGET_SPENT, f"daily budget ${budget:.4f} spent")
        if not provider.ready():
            return Exclusion(ExclusionReason.NOT_READY, provider.unavailable_reason() or "still loading")
        return None

    async def _load_session(self, session_id: str, notes: list[str]) -> SessionState | None:
        """The session (None without an id); a Redis outage degrades to routing without it."""
        if not session_id:
            return None
        try:
            return await self.sessions.load(session_id)
        except (RedisError, OSError, ValueError) as exc:
            log.error("session unavailable; routing without it", extra={"error": f"{type(exc).__name__}: {exc}"})
            notes.append("session store unavailable: routed without continuity")
            return None

    async def _spend(self, user_id: str, needed: bool, notes: list[str]) -> tuple[float, dict[str, float]]:
        """Today's spend for the budget checks; an unreadable store fails open (logged)."""
        if not needed:
            return 0.0, {}
        try:
            return await self.ledger.spend_today(user_id, self.providers)
        except (RedisError, OSError, PyMongoError) as exc:
            log.error("spend unavailable; budgets not enforced for this request", extra={"error": str(exc)})
            notes.append("spend counters unavailable: budgets not checked")
            return 0.0, {}

    # ------------------------------------------------------------------ generating

    def deadline(self, time_remaining: float | None) -> tuple[float, bool]:
        """(loop-time deadline, whether the caller set it): the caller's, else ROUTER_REQUEST_TIMEOUT_SECONDS."""
        explicit = time_remaining is not None
        budget = self.cfg.request_timeout_seconds if time_remaining is None else max(time_remaining, 0.0)
        return asyncio.get_running_loop().time() + budget, explicit

    async def route(self, req: RouteRequest) -> Plan:
        """The dry run: the decision only (no provider call, no session update)."""
        return await self.plan(req)

    async def generate(self, req: RouteRequest, time_remaining: float | None) -> tuple[Plan, Answer]:
        deadline, _ = self.deadline(time_remaining)

        async def start(p: Plan, name: str, permit: Permit) -> Completion | ProviderError:
            return await self._complete_once(p, name, permit, deadline)

        plan, early = await self._plan_for(req, deadline, start, None)

        async def once(name: str, permit: Permit) -> Completion | ProviderError:
            return await start(plan, name, permit)

        name, completion = await self._attempt_loop(plan, deadline, once, early)
        return plan, await self._done(plan, name, completion)

    async def generate_stream(self, req: RouteRequest, time_remaining: float | None) -> AsyncIterator[StreamItem]:
        deadline, explicit = self.deadline(time_remaining)

        async def start(p: Plan, name: str, permit: Permit) -> tuple[OpenStream, Permit] | ProviderError:
            opened = await self._open_stream(p, name, permit, deadline)
            return opened if isinstance(opened, ProviderError) else (opened, permit)

        async def discard(name: str, started: tuple[OpenStream, Permit] | ProviderError) -> str:
            assert not isinstance(started, ProviderError)  # only successful starts are discarded
            opened, permit = started
            await opened.events.aclose()
            await self._release(name, permit)
            return opened.first.text if isinstance(opened.first, StreamDelta) else ""

        plan, early = await self._plan_for(req, deadline, start, discard)
        try:
            yield plan
        except BaseException:
            if early is not None:
                early[1].cancel()
            raise

        async def once(name: str, permit: Permit) -> tuple[OpenStream, Permit] | ProviderError:
            return await start(plan, name, permit)

        name, (opened, permit) = await self._attempt_loop(plan, deadline, once, early)
        async for item in self._relay(plan, name, opened, permit, deadline if explicit else math.inf):
            yield item

    async def _attempt_loop(
        self,
        plan: Plan,
        deadline: float,
        attempt: Callable[[str, Permit], Awaitable[T | ProviderError]],
        early: Early[T] | None = None,
    ) -> tuple[str, T]:
        """Walk the candidates (retrying the last one when worth it) until an attempt succeeds.

        ``early``: the first choice's attempt, already started (and admitted) by the speculative start.
        """
        for index, name in enumerate(plan.order):
            retries = 0
            while tries(plan) < self.cfg.max_attempts or early is not None:
                if early is not None and early[0] == name:
                    result = await early[1]
                    early = None
                else:
                    self._check_deadline(plan, deadline)
                    permit = await self._admit(plan, name)
                    if permit is None:
                        break
                    result = await attempt(name, permit)
                if not isinstance(result, ProviderError):
                    return name, result
                if not await self._retry_pause(plan, result, index, retries, deadline):
                    break
                retries += 1
        raise exhausted(plan, past_deadline=asyncio.get_running_loop().time() >= deadline - 0.01)

    async def _relay(
        self, plan: Plan, name: str, opened: OpenStream, permit: Permit, hard_deadline: float
    ) -> AsyncIterator[StreamItem]:
        """Send a started stream to the client; a failure now ends the RPC (no fallback)."""
        parts: list[str] = []
        event: StreamEvent = opened.first
        task: asyncio.Task[None] | None = None
        try:
            if isinstance(event, StreamDelta):
                parts.append(event.text)
                yield event.text
                box = Mailbox()
                idle = self.cfg.stream_idle_timeout_seconds
                task = asyncio.create_task(pump(opened.events, name, box, idle_seconds=idle, deadline=hard_deadline))
                event = await box.take(parts)
                while isinstance(event, StreamDelta):
                    yield event.text
                    event = await box.take(parts)
        except ProviderError as err:
            await self._fail(plan, name, permit, err, opened.started)
            self.books.charge_broken(plan, name, "".join(parts), opened.started)
            sent = sum(map(len, parts))
            if asyncio.get_running_loop().time() >= hard_deadline:
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
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await opened.events.aclose()
        assert isinstance(event, StreamEnd)
        latency = (time.perf_counter() - opened.started) * 1000
        done = Completion("".join(parts), event.usage, event.finish_reason, event.model, latency, opened.ttft_ms)
        self._record_success(name, permit, latency / 1000)
        yield await self._done(plan, name, done)

    # ------------------------------------------------------------------ attempts

    def _attempt_timeout(self, provider: Provider, deadline: float) -> float:
        limit = provider.spec.timeout_seconds or self.cfg.attempt_timeout_seconds
        return max(min(limit, deadline - asyncio.get_running_loop().time()), 0.001)

    def _check_deadline(self, plan: Plan, deadline: float) -> None:
        if asyncio.get_running_loop().time() >= deadline - 0.001:
            tried = ", ".join(f"{a.provider} ({a.outcome})" for a in plan.attempts) or "none"
            raise DeadlineExceeded(f"the request deadline passed before an answer was complete (tried: {tried})")

    async def _admit(self, plan: Plan | None, name: str) -> Permit | None:
        """Breaker permission and the provider's rate limit; None (with an Attempt noted) when refused.

        ``plan`` None: the speculative start asks; a refusal is neither noted nor raised (the
        attempt loop asks again and does both).
        """
        permit = await self.breakers.acquire(name)
        if not permit.allowed:
            if plan is None:
                return None
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
            if plan is not None:
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
                completion = await provider.complete(plan.request.chat, timeout)
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
            self._record_success(name, permit, time.perf_counter() - started)
            return completion
        await self._fail(plan, name, permit, err, started)
        return err

    async def _open_stream(self, plan: Plan, name: str, permit: Permit, deadline: float) -> OpenStream | ProviderError:
        """Start a stream and wait for its first event (bounded by the first-token timeout)."""
        provider = self.providers[name]
        loop = asyncio.get_running_loop()
        timeout = self._attempt_timeout(provider, deadline)
        started = time.perf_counter()
        events = provider.stream(plan.request.chat, timeout)
        try:
            first = await first_event(events, name, loop.time() + min(timeout, self.cfg.first_token_timeout_seconds))
        except ProviderError as err:
            await events.aclose()
            await self._fail(plan, name, permit, err, started)
            return err
        except BaseException:
            await events.aclose()
            await self._release(name, permit)
            raise
        return OpenStream(events, first, started, (time.perf_counter() - started) * 1000)

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

    def _record_success(self, name: str, permit: Permit, seconds: float) -> None:
        """Write a success to the breaker without making the answer wait for Redis.

        Failures are written before the attempt loop goes on (its retry check reads the state);
        a success only has to land before long, so it runs beside the reply (``close`` drains).
        """
        task = asyncio.create_task(self.breakers.record(name, permit, ok=True, seconds=seconds))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Wait for breaker writes still under way (bounded), so a stop loses none."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=5.0)

    async def _release(self, name: str, permit: Permit) -> None:
        """Give back a HALF_OPEN trial permit that produced no verdict (cancelled, rate-limited)."""
        if permit.trial:
            await asyncio.shield(self.breakers.record(name, permit, ok=True, seconds=0.0, ignored=True))

    def _note(self, plan: Plan, name: str, outcome: str, error: str, latency_ms: float) -> None:
        plan.attempts.append(Attempt(name, outcome, error, latency_ms))
        metrics.ATTEMPTS.labels(name, outcome).inc()

    async def _retry_pause(self, plan: Plan, err: ProviderError, index: int, retries: int, deadline: float) -> bool:
        """Sleep before retrying the same provider, or return False to move on."""
        last_candidate = plan.pinned or index == len(plan.order) - 1
        if not (err.retryable and last_candidate and retries < self.cfg.retries_per_provider):
            return False
        if self.breakers.check(err.provider) == Gate.SKIP or tries(plan) >= self.cfg.max_attempts:
            return False
        cap = min(self.cfg.retry_backoff_max_ms, self.cfg.retry_backoff_base_ms * 2**retries) / 1000
        pause = self.rng.uniform(0, cap)
        if err.retry_after:
            pause = max(pause, min(err.retry_after, self.cfg.retry_backoff_max_ms / 1000))
        if asyncio.get_running_loop().time() + pause >= deadline - 0.01:
            return False
        await asyncio.sleep(pause)
        return True

    # ------------------------------------------------------------------ bookkeeping

    async def _done(self, plan: Plan, name: str, done: Completion) -> Answer:
        self._note(plan, name, "ok", "", done.latency_ms)
        return await self.books.finish(plan, name, done)
