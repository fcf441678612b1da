"""Pluggable reward models that score a new node in [0, 1].

Scorers are tried in order until one can judge the node:

* **verifier** - exact checks: a final answer is evaluated against the question's arithmetic
  expression or equation (1 correct, 0 wrong); an intermediate step's written computations
  (``a = b``) are re-computed (any false one scores ``wrong_claim``, all true ``verified_step``).
  Steps it cannot check pass to the next scorer.
* **judge** - a judge model through the router (purpose JUDGE) scores the path 0-10.
* **heuristic** - the documented last resort, see :class:`HeuristicScorer`.

A non-final step at the depth limit is a dead end whatever the model: it scores ``dead_end``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from services.reasoning.mcts.generator import CallUsage, Completer, GenerationError
from services.reasoning.mcts.mathcheck import CheckableProblem, check_claims
from services.reasoning.mcts.prompts import judge_messages


class RewardMode(enum.IntEnum):
    """Values equal the proto enum ``masterx.reasoning.v1.RewardModel``."""

    AUTO = 0
    VERIFIER = 1
    JUDGE = 2
    HEURISTIC = 3


@dataclass(slots=True)
class RewardInput:
    query: str
    problem: CheckableProblem | None
    previous: tuple[str, ...]
    step: str
    answer: str | None  # the stated final answer (None = not terminal)
    canonical: str | None
    at_max_depth: bool
    answer_counts: Mapping[str, int]  # terminal nodes per canonical answer, this one included
    deadline: float


@dataclass(frozen=True, slots=True)
class Reward:
    value: float
    source: str
    usages: tuple[CallUsage, ...] = ()


@dataclass(frozen=True)
class RewardSettings:
    correct: float = 1.0
    wrong: float = 0.0
    verified_step: float = 0.6
    wrong_claim: float = 0.05
    dead_end: float = 0.05
    heuristic_base: float = 0.5
    heuristic_repeat_penalty: float = 0.3
    heuristic_short_penalty: float = 0.2
    heuristic_terminal_floor: float = 0.3
    heuristic_terminal_span: float = 0.6
    judge_max_tokens: int = 8

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> RewardSettings:
        return cls(**{k: type(getattr(cls, k))(v) for k, v in data.items()})  # type: ignore[call-arg,operator]


class VerifierScorer:
    """Exact checks (see module docstring); returns None when the node is not checkable."""

    def __init__(self, settings: RewardSettings) -> None:
        self.s = settings

    def score(self, item: RewardInput) -> Reward | None:
        if item.answer is not None:
            if item.problem is None:
                return None
            ok = item.problem.check(item.answer)
            return Reward(self.s.correct if ok else self.s.wrong, "verifier")
        claims = check_claims(item.step)
        if claims.claims == 0:
            return None
        return Reward(self.s.wrong_claim if claims.wrong else self.s.verified_step, "verifier")


_SCORE_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/\s*(100|10)\b)?")


def parse_judge_score(text: str) -> float | None:
    """First number in the judge's reply as a value in [0, 1] (``8``, ``7.5/10``, ``80/100``)."""
    m = _SCORE_RE.search(text)
    if m is None:
        return None
    value = float(m.group(1))
    scale = float(m.group(2) or 10)
    if not 0.0 <= value <= scale:
        return None
    return value / scale


class JudgeScorer:
    """Scores the path with a judge model through the router; None when the reply has no score."""

    def __init__(self, completer: Completer, settings: RewardSettings) -> None:
        self.completer = completer
        self.s = settings

    async def score(self, item: RewardInput) -> tuple[Reward | None, tuple[CallUsage, ...]]:
        try:
            done = await self.completer.complete(
                judge_messages(item.query, (*item.previous, item.step)),
                purpose="judge",
                max_tokens=self.s.judge_max_tokens,
                deadline=item.deadline,
                temperature=0.0,
            )
        except GenerationError:
            return None, ()
        value = parse_judge_score(done.text)
        usage = (done.usage,)
        return (Reward(value, "judge", usage) if value is not None else None), usage


_WORD_RE = re.compile(r"\w+")


@lru_cache(maxsize=4096)
def _words(text: str) -> frozenset[str]:
    """Word set of a step (cached: every step is compared with each of its descendants)."""
    return frozenset(_WORD_RE.findall(text.lower()))


class HeuristicScorer:
    """Last resort when nothing can check a node. Documented rules:

    * a final answer scores ``terminal_floor + terminal_span * same / (terminals + 1)``, where
      ``same`` counts the tree's final answers equal to it (itself included): self-consistency,
      agreeing independent paths make an answer more likely right;
    * any other step starts at ``base``; minus ``repeat_penalty`` when it repeats an earlier step
      on its path (90 % word overlap: no progress); minus ``short_penalty`` when it has fewer than
      three words.
    """

    def __init__(self, settings: RewardSettings) -> None:
        self.s = settings

    def score(self, item: RewardInput) -> Reward:
        s = self.s
        if item.canonical is not None:
            total = sum(item.answer_counts.values())
            same = item.answer_counts.get(item.canonical, 1)
            return Reward(
                _clamp(s.heuristic_terminal_floor + s.heuristic_terminal_span * same / (total + 1)), "heuristic"
            )
        value = s.heuristic_base
        words = _words(item.step)
        if len(words) < 3:
            value -= s.heuristic_short_penalty
        for earlier in item.previous:
            other = _words(earlier)
            if words and other and len(words & other) / max(len(words | other), 1) >= 0.9:
                value -= s.heuristic_repeat_penalty
                break
        return Reward(_clamp(value), "heuristic")


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


@dataclass
class RewardModel:
    """Runs the scorers of a mode in order (see module docstring)."""

    mode: RewardMode
    settings: RewardSettings = field(default_factory=RewardSettings)
    judge: JudgeScorer | None = None

    def __post_init__(self) -> None:
        self.verifier = VerifierScorer(self.settings)
        self.heuristic = HeuristicScorer(self.settings)
        self.uses_judge = self.judge is not None and self.mode in (RewardMode.AUTO, RewardMode.JUDGE)

    def _score_without_model(self, item: RewardInput) -> Reward | None:
        """The dead-end rule, then the verifier where the mode allows it; None when neither decides."""
        if item.answer is None and item.at_max_depth:
            return Reward(self.settings.dead_end, "heuristic")
        if self.mode in (RewardMode.AUTO, RewardMode.VERIFIER):
            return self.verifier.score(item)
        return None

    async def score(self, item: RewardInput) -> Reward:
        decided = self._score_without_model(item)
        if decided is not None:
            return decided
        usages: tuple[CallUsage, ...] = ()
        if self.uses_judge:
            assert self.judge is not None
            judged, usages = await self.judge.score(item)
            if judged is not None and not math.isnan(judged.value):
                return judged
        fallback = self.heuristic.score(item)
        return Reward(fallback.value, fallback.source, usages)

    def score_without_calls(self, item: RewardInput) -> Reward:
        """Dead-end rule, verifier, heuristic: for when there is no time left to ask the judge."""
        decided = self._score_without_model(item)
        return decided if decided is not None else self.heuristic.score(item)
