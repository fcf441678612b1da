"""Bookkeeping after an answer (or a stream broken after text was sent): the cost ledger, metrics,
the token rate limit, the session. Failures here are logged and never fail an answered request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping

from masterx_runtime.logs import request_id_var
from services.router import metrics
from services.router.config import RouterSettings
from services.router.domain import Answer
from services.router.ledger import Charge, CostLedger, RateLimiter
from services.router.plan import Plan
from services.router.policy import Policy
from services.router.providers.base import Completion, Provider, Usage, estimate_input_tokens, estimate_tokens
from services.router.sessions import SessionStore, advance

log = logging.getLogger("masterx.router")


class Books:
    def __init__(
        self,
        cfg: RouterSettings,
        policy: Policy,
        providers: Mapping[str, Provider],
        *,
        ledger: CostLedger,
        limiter: RateLimiter,
        sessions: SessionStore,
    ) -> None:
        self.cfg = cfg
        self.policy = policy
        self.providers = providers
        self.ledger = ledger
        self.limiter = limiter
        self.sessions = sessions

    def charge(self, plan: Plan, name: str, model: str, usage: Usage, latency_ms: float, partial: bool) -> float:
        provider, req = self.providers[name], plan.request
        cost = provider.spec.cost_usd(usage)
        self.ledger.submit(
            Charge(
                user_id=req.user_id,
                provider=name,
                model=model or provider.spec.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                estimated=usage.estimated,
                cost_usd=cost,
                purpose=req.purpose,
                session_id=req.session_id,
                latency_ms=latency_ms,
                request_id=request_id_var.get(),
                partial=partial,
            )
        )
        return cost

    def charge_broken(self, plan: Plan, name: str, text: str, started: float) -> None:
        """A stream that broke after text was sent still spent tokens: charge them (estimated, partial)."""
        usage = Usage(estimate_input_tokens(plan.request.chat), estimate_tokens(text), estimated=True)
        self.charge(plan, name, "", usage, (time.perf_counter() - started) * 1000, partial=True)

    async def finish(self, plan: Plan, name: str, done: Completion) -> Answer:
        provider = self.providers[name]
        cost = self.charge(plan, name, done.model, done.usage, done.latency_ms, partial=False)
        if name != plan.order[0]:
            metrics.FALLBACKS.inc()
        metrics.TOKENS.labels(name, "input").inc(done.usage.input_tokens)
        metrics.TOKENS.labels(name, "output").inc(done.usage.output_tokens)
        metrics.COST.labels(name).inc(cost)
        metrics.PROVIDER_TTFT.labels(name).observe(done.ttft_ms / 1000)
        await asyncio.gather(
            self._safe(self.limiter.add_tokens(name, done.usage.total_tokens), "rate limiter"),
            self._safe(self.save_session(plan, name), "session"),
        )
        return Answer(
            text=done.text,
            provider=name,
            model=done.model or provider.spec.model,
            usage=done.usage,
            cost_usd=cost,
            latency_ms=done.latency_ms,
            ttft_ms=done.ttft_ms,
            finish_reason=done.finish_reason,
            attempts=tuple(plan.attempts),
        )

    async def save_session(self, plan: Plan, name: str) -> None:
        if plan.session is None:
            return
        d = plan.decision
        updated = advance(
            plan.session,
            d.topic,
            d.category.probabilities,
            name,
            history_limit=self.cfg.session_history,
            ema=self.policy.topic_ema,
            distress=d.escalation.distress,
            escalated=d.escalation.active,
            distress_window=self.policy.escalation.window,
        )
        await self.sessions.save(updated)

    @staticmethod
    async def _safe(coro: Awaitable[object], what: str) -> None:
        try:
            await coro
        except Exception as exc:  # bookkeeping must not fail an answered request
            log.error("bookkeeping failed", extra={"what": what, "error": f"{type(exc).__name__}: {exc}"})
