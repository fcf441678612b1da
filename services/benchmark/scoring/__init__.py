"""Scoring of provider answers: numeric answers, sandboxed unit tests, keywords, rubrics."""

from services.benchmark.scoring.sandbox import Sandbox, SandboxLimits, SandboxResult, SandboxUnavailable
from services.benchmark.scoring.scorers import ItemScorer, Judge, Score
from services.benchmark.scoring.specs import Spec, SpecError, parse_spec

__all__ = [
    "ItemScorer",
    "Judge",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "Score",
    "Spec",
    "SpecError",
    "parse_spec",
]
