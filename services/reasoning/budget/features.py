"""Explicit, named features of a query that predict how much reasoning it needs.

Each feature is a small measurable property (length, numbers and operators, question
structure, code, multi-step cues...). Their weights are not chosen by hand: the estimator fits
them on labelled queries (see :mod:`services.reasoning.budget.estimator`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from services.reasoning.mcts.mathcheck import find_problem

_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)?")
_OPERATOR_RE = re.compile(r"[+\-*/^=<>×÷√∫∑≤≥]")
_WORD_RE = re.compile(r"[A-Za-z']+")
_SENTENCE_RE = re.compile(r"[.!?]+(?:\s|$)")


def _cue(words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + words + r")\b", re.IGNORECASE)


_EXPLAIN = _cue(r"why|explain|reason|describe")
_PROOF = _cue(r"prove|proof|show that|derive|justify|demonstrate|if and only if|argue")
_HOW = _cue(r"how")
_FACTUAL = _cue(r"what is|what's|who|when|where|define|definition of|meaning of|name")
_COMPARE = _cue(r"compare|difference|differences|versus|vs|contrast|pros and cons|better")
_MULTI_STEP = _cue(
    r"then|after|afterwards|first|next|finally|each|every|total|remaining|left|altogether|"
    r"step by step|per|twice|half|more than|less than|if"
)
_CODE = _cue(
    r"code|function|class|method|bug|error|exception|python|javascript|java|sql|compile|"
    r"algorithm|implement|recursion|complexity|runtime|array|loop|api|regex"
)
_CODE_SYNTAX = re.compile(r"```|\bdef\b|\breturn\b|=>|\{|\}|;\s*$|\w+\([^)]*\)", re.MULTILINE)
_ADVANCED_MATH = _cue(
    r"derivative|integral|integrate|differentiate|limit|matrix|matrices|eigen\w*|probability|"
    r"theorem|induction|logarithm|log|sin|cos|tan|series|polynomial|quadratic|vector|"
    r"optimi[sz]e|maximi[sz]e|minimi[sz]e|prime|combinatorics|permutations?|expected value"
)
_CONSTRAINT = _cue(r"must|without|at least|at most|only|exactly|such that|given that|assume|except")
_SMALL_TALK = _cue(r"hi|hello|hey|thanks|thank you|bye|good morning|ok|okay|cool")


def _log(n: float) -> float:
    return math.log1p(n)


#: (name, function of (text, lower-cased text)) in a fixed order; the order is the model's.
FEATURES: tuple[tuple[str, Callable[[str], float]], ...] = (
    ("log_chars", lambda t: _log(len(t))),
    ("log_words", lambda t: _log(len(_WORD_RE.findall(t)))),
    ("avg_word_len", lambda t: _avg_word_len(t)),
    ("log_numbers", lambda t: _log(len(_NUMBER_RE.findall(t)))),
    ("log_operators", lambda t: _log(len(_OPERATOR_RE.findall(t)))),
    ("equation", lambda t: _problem_kind(t) == "equation"),
    ("arithmetic", lambda t: _problem_kind(t) == "arithmetic"),
    ("log_sentences", lambda t: _log(len(_SENTENCE_RE.findall(t)) or 1)),
    ("questions", lambda t: min(t.count("?"), 5)),
    ("explain_cue", lambda t: min(len(_EXPLAIN.findall(t)), 3)),
    ("proof_cue", lambda t: min(len(_PROOF.findall(t)), 3)),
    ("how_cue", lambda t: min(len(_HOW.findall(t)), 3)),
    ("factual_cue", lambda t: min(len(_FACTUAL.findall(t)), 3)),
    ("compare_cue", lambda t: min(len(_COMPARE.findall(t)), 3)),
    ("multi_step_cues", lambda t: _log(len(_MULTI_STEP.findall(t)))),
    ("code_cues", lambda t: _log(len(_CODE.findall(t)))),
    ("code_syntax", lambda t: _log(len(_CODE_SYNTAX.findall(t)))),
    ("advanced_math", lambda t: _log(len(_ADVANCED_MATH.findall(t)))),
    ("constraints", lambda t: _log(len(_CONSTRAINT.findall(t)))),
    ("log_commas", lambda t: _log(t.count(","))),
    ("small_talk", lambda t: float(bool(_SMALL_TALK.search(t)) and len(t) < 60)),
)

FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in FEATURES)


def _avg_word_len(text: str) -> float:
    words = _WORD_RE.findall(text)
    return sum(len(w) for w in words) / len(words) if words else 0.0


def _problem_kind(text: str) -> str | None:
    problem = find_problem(text[:2000])
    return problem.kind if problem else None


def extract(text: str) -> list[float]:
    """Feature vector of ``text`` in :data:`FEATURE_NAMES` order."""
    return [float(fn(text)) for _, fn in FEATURES]
