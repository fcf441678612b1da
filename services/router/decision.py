"""The routing decision as one pure function: typed inputs in, a ranked, explained Decision out.

``decide(inputs, policy, settings)`` does no I/O (no Redis, no MongoDB, no clock, no proto): the
engine gathers the inputs (session, spend, breaker states, scores) and carries the decision out.
Steps, each adding a reason:

1. category: the probabilities given (hint, request, emotion service or classifier);
2. topic: the session's topic holds or changes (``sessions.judge_topic``);
3. empathy: a frustrated/anxious learning state or a strong negative emotion ranks by ``empathy``;
4. complexity moves the cost-quality knob (``complexity.adjusted_knob``);
5. escalation: a worsening session raises the knob to ``escalation.knob`` until it recovers;
6. rank: ``score = (wq*2k*q + ws*s + wc*2(1-k)*c) / (wq*2k + ws + wc*2(1-k))`` with the
   benchmark suites' weights (at k = 0.5 this is the leaderboard's ``final_score``); quality
   under ``min_quality`` ranks after every acceptable provider; excluded providers go last;
7. continuity: the session's provider goes first while the topic holds (not when escalation
   or empathy just changed the picture);
8. refusals: a spent user budget, a pinned provider that cannot take the call, nobody left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from masterx_runtime.errors import FailedPrecondition, ResourceExhausted, Unavailable
from services.router.breaker import BreakerState
from services.router.complexity import adjusted_knob
from services.router.domain import CATEGORIES, CategoryScores, ComplexitySource, EmotionSignal, Trajectory
from services.router.policy import Policy
from services.router.scores import Score, Weights
from services.router.sessions import SessionState, TopicVerdict, judge_topic


class ExclusionReason(StrEnum):
    BREAKER_OPEN = "breaker_open"
    BUDGET_SPENT = "budget_spent"
    NOT_READY = "not_ready"


@dataclass(frozen=True)
class Exclusion:
    reason: ExclusionReason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value.replace('_', ' ')}: {self.detail}" if self.detail else self.reason.value


@dataclass(frozen=True)
class ProviderView:
    """One provider as the decision sees it."""

    name: str
    model: str
    scores: Mapping[str, Score]  # category -> score
    breaker: BreakerState = BreakerState.CLOSED
    exclusion: Exclusion | None = None


@dataclass(frozen=True)
class Complexity:
    value: float
    source: ComplexitySource


@dataclass(frozen=True)
class Knobs:
    """Settings the decision reads (from RouterSettings)."""

    default_cost_quality: float = 0.5
    min_quality: float = 30.0
    topic_min_confidence: float = 0.45
    topic_similarity: float = 0.5
    empathy_negative_threshold: float = 0.5
    user_daily_budget_usd: float = 0.0


@dataclass(frozen=True)
class Inputs:
    category: CategoryScores
    text: str  # the last user message
    complexity: Complexity
    providers: Sequence[ProviderView]
    weights: Mapping[str, Weights]
    cost_quality: float | None = None
    emotion: EmotionSignal | None = None
    session: SessionState | None = None
    pinned: str = ""
    user_id: str = ""
    user_spent_usd: float = 0.0


@dataclass
class Candidate:
    provider: str
    model: str
    score: float
    score_obj: Score
    breaker: BreakerState
    exclusion: Exclusion | None
    below_min: bool
    reason: str

    @property
    def excluded(self) -> bool:
        return self.exclusion is not None


@dataclass(frozen=True)
class Escalation:
    active: bool
    changed: bool
    distress: float | None  # this turn's distress (None without an emotion result)
    reason: str = ""


@dataclass
class Decision:
    provider: str
    candidates: list[Candidate]
    order: list[str]  # eligible providers, in the order they will be tried
    ranking_category: str
    category: CategoryScores
    topic: TopicVerdict
    empathy: str  # why the empathy ranking was used ('' when not)
    escalation: Escalation
    continuity: bool
    complexity: Complexity
    knob: float  # the caller's (or default) knob
    knob_used: float  # after complexity and escalation
    weights: Weights
    reasons: list[str] = field(default_factory=list)


def empathy_reason(emotion: EmotionSignal, policy: Policy, threshold: float) -> str:
    """Why this emotion calls for the empathy ranking ('' when it does not)."""
    if emotion.learning_state in policy.empathy_states:
        return f"learning state {emotion.learning_state.value}"
    strongest = max(
        ((p, label) for label, p in emotion.scores.items() if label in policy.negative_emotions), default=(0.0, "")
    )
    if emotion.primary in policy.negative_emotions and emotion.confidence > strongest[0]:
        strongest = (emotion.confidence, emotion.primary)
    if strongest[1] and strongest[0] >= threshold:
        return f"strong negative emotion {strongest[1]} ({strongest[0]:.2f})"
    return ""


def continuation_cue(text: str, policy: Policy) -> str:
    """A structural follow-up cue ('' when none): a very short message, or a short one that
    opens with a continuation marker ("and ...", "why ...", "ok ...")."""
    words = text.lower().split()
    if len(words) <= policy.short_words:
        return f"short message ({len(words)} words)"
    if len(words) <= policy.marker_max_words:
        opening = " ".join(words[:3]).lstrip("(\"'")
        for marker in policy.continuation_markers:
            if opening.startswith(marker) and (len(opening) == len(marker) or not opening[len(marker)].isalnum()):
                return f"opens with {marker!r}"
    return ""


def distress_of(emotion: EmotionSignal, policy: Policy) -> float:
    """This turn's distress in [0, 1] from the learning-state probabilities (or the state alone)."""
    weights = policy.escalation.distress_weights
    if emotion.state_scores:
        value = sum(w * emotion.state_scores.get(s.value, 0.0) for s, w in weights.items())
    else:
        value = weights.get(emotion.learning_state, 0.0)
    return min(1.0, max(0.0, value))


def judge_escalation(session: SessionState | None, emotion: EmotionSignal | None, policy: Policy) -> Escalation:
    """Escalate a worsening session; relax when it recovers; otherwise keep the session's state."""
    rules = policy.escalation
    was = bool(session and session.escalated)
    if not rules.enabled or session is None:
        return Escalation(False, False, None)
    if emotion is None:
        return Escalation(was, False, None, "escalation holds (no emotion result this turn)" if was else "")
    now = distress_of(emotion, policy)
    window = [*session.distress[-(rules.window - 1) :], now]
    declining = emotion.trajectory == Trajectory.DECLINING
    if not was:
        rise = now - min(window[:-1]) if len(window) > 1 else 0.0
        if len(window) > 1 and rise >= rules.rise and now >= rules.level:
            return Escalation(
                True,
                True,
                now,
                f"escalated: distress rose {min(window[:-1]):.2f} -> {now:.2f} over {len(window)} turns",
            )
        if declining and now >= rules.declining_level:
            return Escalation(True, True, now, f"escalated: trajectory declining (distress {now:.2f})")
        return Escalation(False, False, now)
    if now <= rules.relax_below and not declining:
        return Escalation(False, True, now, f"escalation relaxed: distress {now:.2f} <= {rules.relax_below:.2f}")
    return Escalation(True, False, now, f"escalation holds: distress {now:.2f}")


def rank(
    providers: Sequence[ProviderView], category: str, knob: float, weights: Weights, min_quality: float
) -> list[Candidate]:
    """All providers, best first; below-minimum quality after acceptable ones; excluded last."""
    wq, ws, wc = weights.quality * 2 * knob, weights.speed, weights.cost * 2 * (1 - knob)
    total = (wq + ws + wc) or 1.0
    out: list[Candidate] = []
    for p in providers:
        s = p.scores[category]
        exclusion = p.exclusion
        if exclusion is None and p.breaker == BreakerState.OPEN:
            exclusion = Exclusion(ExclusionReason.BREAKER_OPEN, "")
        below = s.quality < min_quality
        if exclusion is not None:
            reason = f"excluded: {exclusion}"
        elif below:
            reason = f"quality {s.quality:.0f} under minimum {min_quality:.0f}: ranked after acceptable providers"
        else:
            reason = f"{category} q={s.quality:.0f} s={s.speed:.0f} c={s.cost:.0f} knob={knob:.2f}"
            if p.breaker == BreakerState.HALF_OPEN:
                reason += " (breaker half-open: trial call)"
        if s.detail:
            reason += f"; {s.source.value}: {s.detail}"
        else:
            reason += f"; {s.source.value}"
        score = (wq * s.quality + ws * s.speed + wc * s.cost) / total
        out.append(Candidate(p.name, p.model, round(score, 3), s, p.breaker, exclusion, below, reason))
    out.sort(key=lambda c: (c.excluded, c.below_min, -c.score, c.provider))
    return out


def _refuse_pinned(c: Candidate) -> None:
    if c.exclusion is None:
        return
    if c.exclusion.reason == ExclusionReason.BREAKER_OPEN:
        raise FailedPrecondition(
            f"pinned provider {c.provider}'s circuit breaker is open; pinned requests never fall back",
            reason="BREAKER_OPEN",
            field="pinned_provider",
        )
    if c.exclusion.reason == ExclusionReason.BUDGET_SPENT:
        raise ResourceExhausted(f"pinned provider {c.provider}: {c.exclusion}", reason="BUDGET_EXCEEDED")
    raise Unavailable(
        f"pinned provider {c.provider}: {c.exclusion}", reason="PROVIDER_NOT_READY", dependency=c.provider
    )


def decide(inputs: Inputs, policy: Policy, knobs: Knobs) -> Decision:
    """The decision for one request (raises the service errors a refusal maps to)."""
    if inputs.user_id and 0 < knobs.user_daily_budget_usd <= inputs.user_spent_usd:
        raise ResourceExhausted(
            f"user {inputs.user_id!r} spent ${inputs.user_spent_usd:.4f} today; "
            f"the daily budget is ${knobs.user_daily_budget_usd:.4f}",
            reason="BUDGET_EXCEEDED",
            field="user_id",
        )
    cat = inputs.category
    reasons = [f"category {cat.category} ({cat.confidence:.2f}; follow-up {cat.followup:.2f}) from {cat.source.value}"]
    if cat.detail:
        reasons[-1] += f" ({cat.detail})"
    session = inputs.session
    if session is not None:
        cue = continuation_cue(inputs.text, policy)
        if not cue and policy.general_keeps and cat.category == "general" and session.category not in ("", "general"):
            cue = "general message inside a topic"
        topic = judge_topic(
            session,
            cat.category,
            cat.confidence,
            cat.probabilities,
            min_confidence=knobs.topic_min_confidence,
            similarity_threshold=knobs.topic_similarity,
            followup=1.0 if cue else cat.followup,
            followup_keep=policy.followup_keep,
        )
        reasons.append(f"{topic.reason} [{cue}]" if cue and topic.followup else topic.reason)
    else:
        topic = TopicVerdict(False, cat.category, "no session")
    ranking_category = topic.category
    empathy = empathy_reason(inputs.emotion, policy, knobs.empathy_negative_threshold) if inputs.emotion else ""
    if empathy:
        ranking_category = "empathy"
        reasons.append(f"empathy ranking: {empathy}")

    knob = knobs.default_cost_quality if inputs.cost_quality is None else inputs.cost_quality
    cx = inputs.complexity
    knob_used = adjusted_knob(knob, cx.value, pivot=policy.complexity_pivot, gain=policy.complexity_gain)
    reasons.append(
        f"complexity {cx.value:.2f} ({cx.source.value}): cost_quality {knob:.2f} -> {knob_used:.2f} "
        f"(gain {policy.complexity_gain:g} around {policy.complexity_pivot:g})"
    )
    escalation = judge_escalation(session, inputs.emotion, policy)
    if escalation.active and knob_used < policy.escalation.knob:
        knob_used = policy.escalation.knob
    if escalation.reason:
        reasons.append(
            escalation.reason + (f" (cost_quality >= {policy.escalation.knob:.2f})" if escalation.active else "")
        )

    weights = inputs.weights.get(ranking_category) or Weights(1 / 3, 1 / 3, 1 / 3, "equal thirds")
    reasons.append(
        f"weights {ranking_category} q/s/c {weights.quality:.2f}/{weights.speed:.2f}/{weights.cost:.2f} "
        f"from {weights.source}"
    )
    pool = [p for p in inputs.providers if p.name == inputs.pinned] if inputs.pinned else list(inputs.providers)
    ranked = rank(pool, ranking_category, knob_used, weights, knobs.min_quality)
    continuity = False
    if inputs.pinned:
        _refuse_pinned(ranked[0])
        reasons.append(f"pinned to {inputs.pinned}: no fallback")
    elif session is not None and session.provider and not topic.changed and not empathy and not escalation.changed:
        known = {p.name for p in inputs.providers}
        index = next((i for i, c in enumerate(ranked) if c.provider == session.provider), -1)
        if session.provider not in known:
            reasons.append(f"session provider {session.provider} is no longer configured: re-routed")
        elif index >= 0 and not ranked[index].excluded:
            chosen = ranked.pop(index)
            chosen.reason = f"continuity; {chosen.reason}"
            ranked.insert(0, chosen)
            continuity = True
            reasons.append(f"continuity: staying with {session.provider} while the topic holds")
        else:
            why = ranked[index].exclusion if index >= 0 else "unknown"
            reasons.append(f"session provider {session.provider} unavailable ({why}): re-routed")
    order = [c.provider for c in ranked if not c.excluded]
    if not order:
        if ranked and all(c.exclusion and c.exclusion.reason == ExclusionReason.BUDGET_SPENT for c in ranked):
            raise ResourceExhausted("every provider's daily budget is spent", reason="BUDGET_EXCEEDED")
        raise Unavailable(
            "no provider can take the request: " + "; ".join(f"{c.provider}: {c.exclusion}" for c in ranked),
            reason="NO_PROVIDER",
            dependency="providers",
        )
    reasons.append(f"chose {order[0]} for {ranking_category} (cost_quality used {knob_used:.2f})")
    return Decision(
        provider=order[0],
        candidates=ranked,
        order=order,
        ranking_category=ranking_category,
        category=cat,
        topic=topic,
        empathy=empathy,
        escalation=escalation,
        continuity=continuity,
        complexity=cx,
        knob=knob,
        knob_used=knob_used,
        weights=weights,
        reasons=reasons,
    )


def topic_category_index(decision: Decision) -> int:
    """Index in CATEGORIES of the session topic the decision settled on."""
    return CATEGORIES.index(decision.topic.category)
