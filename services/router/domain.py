"""The router's domain types: what the servicer converts requests into and answers out of.

Nothing here knows about protobuf: ``servicer.py`` is the only module that converts between
these and ``router.proto`` / ``common.proto`` messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from services.router.providers.base import ChatRequest, Usage

#: The six routing categories, in ``Category`` enum order (CATEGORY_CODING = 1 ... GENERAL = 6).
CATEGORIES: tuple[str, ...] = ("coding", "math", "research", "language", "empathy", "general")


class CategorySource(StrEnum):
    """Where a request's category probabilities came from (best first)."""

    HINT = "hint"  # the request's explicit ``category``
    REQUEST = "request"  # ``emotion.category_scores`` sent with the request (one encoder pass per chat turn)
    EMOTION_SERVICE = "emotion_service"  # the router asked the emotion service's Analyze
    CLASSIFIER = "classifier"  # the TF-IDF fallback shipped with the router


class LearningState(StrEnum):
    """``common.v1.LearningState`` without the prefix, lower case."""

    UNSPECIFIED = "unspecified"
    CONFUSED = "confused"
    FRUSTRATED = "frustrated"
    ANXIOUS = "anxious"
    BORED = "bored"
    ENGAGED = "engaged"
    CONFIDENT = "confident"
    NEUTRAL = "neutral"


class Trajectory(StrEnum):
    """``common.v1.Trajectory`` without the prefix, lower case."""

    UNSPECIFIED = "unspecified"
    IMPROVING = "improving"
    DECLINING = "declining"
    STABLE_POSITIVE = "stable_positive"
    STABLE_NEUTRAL = "stable_neutral"
    STABLE_NEGATIVE = "stable_negative"


class ComplexitySource(StrEnum):
    """Where the complexity used for ranking came from."""

    REQUEST = "request"  # ``budget.complexity`` (the reasoning service's AllocateBudget)
    ESTIMATED = "estimated"  # the router's cheap estimate (services/router/complexity.py)


@dataclass(frozen=True)
class CategoryScores:
    """Probabilities over ``CATEGORIES`` (sum 1) and the chance the message is a follow-up."""

    probabilities: tuple[float, ...]
    followup: float
    source: CategorySource
    detail: str = ""  # e.g. the model version that produced them

    @property
    def best(self) -> int:
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)

    @property
    def category(self) -> str:
        return CATEGORIES[self.best]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.best]

    @classmethod
    def one_hot(cls, category: str, source: CategorySource = CategorySource.HINT) -> CategoryScores:
        return cls(tuple(1.0 if c == category else 0.0 for c in CATEGORIES), 0.0, source)


@dataclass(frozen=True)
class EmotionSignal:
    """The parts of an emotion result the router uses."""

    learning_state: LearningState = LearningState.UNSPECIFIED
    trajectory: Trajectory = Trajectory.UNSPECIFIED
    primary: str = ""
    confidence: float = 0.0
    #: GoEmotions label -> probability.
    scores: Mapping[str, float] = field(default_factory=dict)
    #: Learning-state name -> probability (may be empty).
    state_scores: Mapping[str, float] = field(default_factory=dict)


class Speculation(StrEnum):
    """What became of a speculative start (a request that asked the router to analyse emotion)."""

    NONE = "none"  # not speculated (no analysis asked, or ROUTER_SPECULATE=0)
    CONFIRMED = "confirmed"  # the analysis picked the provider already called: its answer is used
    SWITCHED = "switched"  # the analysis picked another provider: the early call was cancelled
    NO_ANALYSIS = "no_analysis"  # no analysis in time: routed without it, the early call kept
    NOT_STARTED = "not_started"  # nothing started early (pinned, or breaker / rate limit refused)


@dataclass(frozen=True)
class EmotionEvidence:
    """The emotion service's analysis of a request's last message, made by the router itself."""

    signal: EmotionSignal
    scores: CategoryScores | None  # None when the emotion model has no category head
    #: The EmotionResult as the emotion service sent it: handed back to the caller unchanged.
    result: Any


@dataclass(frozen=True)
class RouteRequest:
    """One validated Generate/GenerateStream/Route request."""

    chat: ChatRequest
    user_id: str = ""
    session_id: str = ""
    category_hint: str = ""  # one of CATEGORIES, or '' to detect
    category_scores: CategoryScores | None = None  # from the request's emotion result
    emotion: EmotionSignal | None = None
    pinned: str = ""
    cost_quality: float | None = None
    complexity: float | None = None  # from budget.complexity
    purpose: str = "unspecified"
    #: Analyse the last message with the emotion service (with the student's history) and route on it.
    analyze: bool = False

    @property
    def text(self) -> str:
        """The last user message (validation guarantees there is one)."""
        return self.chat.messages[-1].content

    def with_evidence(self, evidence: EmotionEvidence) -> RouteRequest:
        """This request as if it had brought the analysis itself (its emotion and category scores)."""
        return replace(self, emotion=evidence.signal, category_scores=evidence.scores or self.category_scores)


@dataclass(frozen=True)
class Attempt:
    """One try at a provider (outcomes are router.proto's Attempt.outcome strings)."""

    provider: str
    outcome: str
    error: str
    latency_ms: float


@dataclass(frozen=True)
class Answer:
    """A finished answer and how it was reached."""

    text: str
    provider: str
    model: str
    usage: Usage
    cost_usd: float
    latency_ms: float
    ttft_ms: float
    finish_reason: str
    attempts: tuple[Attempt, ...]
