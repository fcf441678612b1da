"""A routing decision plus what carrying it out needs, and the error an exhausted plan ends in."""

from __future__ import annotations

from dataclasses import dataclass, field

from masterx_runtime.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, Unavailable
from services.router.decision import Decision
from services.router.domain import Attempt, EmotionEvidence, RouteRequest, Speculation
from services.router.sessions import SessionState


@dataclass
class Plan:
    """A decision plus what carrying it out needs."""

    request: RouteRequest
    decision: Decision
    session: SessionState | None
    decision_ms: float
    attempts: list[Attempt] = field(default_factory=list)
    #: The router's own emotion analysis (requests with ``analyze``), when it arrived.
    evidence: EmotionEvidence | None = None
    speculation: Speculation = Speculation.NONE

    @property
    def order(self) -> list[str]:
        return self.decision.order

    @property
    def pinned(self) -> bool:
        return bool(self.request.pinned)


def tries(plan: Plan) -> int:
    """Provider calls actually made (refusals by a breaker or a local rate limit cost nothing)."""
    return sum(1 for a in plan.attempts if a.outcome not in ("breaker_open", "rate_limited") or a.latency_ms > 0)


def exhausted(plan: Plan, *, past_deadline: bool) -> Exception:
    """The error a request ends with when no attempt succeeded."""
    tried = ", ".join(f"{a.provider} ({a.outcome}: {a.error})" for a in plan.attempts) or "none"
    outcomes = {a.outcome for a in plan.attempts}
    if past_deadline:
        return DeadlineExceeded(f"the request deadline passed before an answer was complete (tried: {tried})")
    if outcomes == {"rate_limited"}:
        return ResourceExhausted(f"every candidate is rate-limited: {tried}", reason="RATE_LIMITED")
    if plan.pinned and outcomes <= {"bad_request"} and outcomes:
        return InvalidArgument(f"the provider refused the request: {tried}", reason="PROVIDER_BAD_REQUEST")
    return Unavailable(
        f"every candidate provider failed: {tried}", reason="ALL_PROVIDERS_FAILED", dependency="providers"
    )
