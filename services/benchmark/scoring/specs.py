"""How a suite item is scored, parsed and validated from its suite file.

Four kinds (the ``type`` of an item's ``scoring`` block):

* ``numeric``: ``answer`` (one value) or ``answers`` (a set), optional ``abs_tol``/``rel_tol``,
  ``require_work`` (a tutor must show the steps).
* ``unit_tests``: ``entry_point`` (the function the answer must define) and ``tests`` (Python
  snippets with asserts, run one by one against the answer's code in the sandbox).
* ``keywords``: ``required`` groups, ``forbidden`` patterns, ``min_words``/``max_words``.
* ``rubric``: criteria from the suite's ``rubric`` block (plus an item ``topic`` group), checked
  by a judge provider when one is configured, by the criteria's patterns otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from services.benchmark.scoring.numeric import parse_expected
from services.benchmark.scoring.text import Group, compile_pattern, parse_group


class SpecError(ValueError):
    """A suite item's scoring block is invalid; the message says what and where."""


@dataclass(frozen=True)
class NumericSpec:
    expected: tuple[float, ...]
    abs_tol: float | None = None
    rel_tol: float | None = None
    require_work: bool = False
    work_penalty: float = 30.0
    kind: str = "numeric"


@dataclass(frozen=True)
class UnitTestSpec:
    entry_point: str
    tests: tuple[str, ...]
    kind: str = "unit_tests"


@dataclass(frozen=True)
class KeywordSpec:
    required: tuple[Group, ...]
    forbidden: tuple[str, ...] = ()
    min_words: int = 0
    max_words: int = 0
    forbidden_penalty: float = 50.0
    length_penalty: float = 25.0
    kind: str = "keywords"


@dataclass(frozen=True)
class Criterion:
    """One rubric criterion: ``require`` is met when a pattern appears, ``forbid`` when none does."""

    name: str
    description: str
    weight: float
    mode: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class RubricSpec:
    criteria: tuple[Criterion, ...]
    min_words: int = 0
    max_words: int = 0
    length_penalty: float = 25.0
    kind: str = "rubric"


Spec = NumericSpec | UnitTestSpec | KeywordSpec | RubricSpec


def _patterns(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw):
        raise SpecError(f"{where}: expected a list of non-empty strings")
    for pattern in raw:
        try:
            compile_pattern(pattern)
        except re.error as exc:
            raise SpecError(f"{where}: bad pattern {pattern!r}: {exc}") from None
    return tuple(raw)


def _words(block: dict[str, Any], where: str) -> tuple[int, int]:
    low, high = int(block.get("min_words", 0)), int(block.get("max_words", 0))
    if low < 0 or high < 0 or (high and low > high):
        raise SpecError(f"{where}: need 0 <= min_words <= max_words")
    return low, high


def parse_criteria(raw: Any, where: str) -> tuple[Criterion, ...]:
    """The suite-level rubric: a list of {name, description, weight, require|forbid: [patterns]}."""
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{where}: rubric must be a non-empty list of criteria")
    criteria = []
    for i, c in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(c, dict) or not c.get("name") or not c.get("description"):
            raise SpecError(f"{here}: a criterion needs a name and a description")
        modes = [m for m in ("require", "forbid") if m in c]
        if len(modes) != 1:
            raise SpecError(f"{here}: give exactly one of require / forbid")
        weight = float(c.get("weight", 1.0))
        if weight <= 0:
            raise SpecError(f"{here}: weight must be > 0")
        patterns = _patterns(c[modes[0]], f"{here}.{modes[0]}")
        if not patterns:
            raise SpecError(f"{here}: needs at least one pattern")
        criteria.append(Criterion(str(c["name"]), str(c["description"]), weight, modes[0], patterns))
    return tuple(criteria)


def parse_spec(block: Any, where: str, *, rubric: tuple[Criterion, ...] = ()) -> Spec:
    """Build the scoring spec of one item; raise SpecError naming the item on any problem."""
    if not isinstance(block, dict) or "type" not in block:
        raise SpecError(f"{where}: scoring must be a mapping with a type")
    kind = block["type"]
    if kind == "numeric":
        raw = block.get("answers", [block["answer"]] if "answer" in block else None)
        if not isinstance(raw, list) or not raw:
            raise SpecError(f"{where}: numeric scoring needs answer or answers")
        try:
            expected = tuple(parse_expected(v) for v in raw)
        except ValueError as exc:
            raise SpecError(f"{where}: {exc}") from None
        abs_tol = float(block["abs_tol"]) if "abs_tol" in block else None
        rel_tol = float(block["rel_tol"]) if "rel_tol" in block else None
        return NumericSpec(expected, abs_tol, rel_tol, bool(block.get("require_work", False)))
    if kind == "unit_tests":
        entry = block.get("entry_point")
        tests = block.get("tests")
        if not isinstance(entry, str) or not entry.isidentifier():
            raise SpecError(f"{where}: unit_tests needs an entry_point identifier")
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise SpecError(f"{where}: unit_tests needs a non-empty list of test snippets")
        for i, test in enumerate(tests):
            try:
                compile(test, f"{where}.tests[{i}]", "exec")
            except SyntaxError as exc:
                raise SpecError(f"{where}: test {i} does not compile: {exc}") from None
        return UnitTestSpec(entry, tuple(tests))
    if kind == "keywords":
        try:
            required = tuple(parse_group(g) for g in block.get("required", []))
        except (ValueError, re.error) as exc:
            raise SpecError(f"{where}: {exc}") from None
        for group in required:
            _patterns(list(group.alternatives), f"{where}.required")
        forbidden = _patterns(block.get("forbidden"), f"{where}.forbidden")
        if not required and not forbidden:
            raise SpecError(f"{where}: keywords scoring needs required or forbidden content")
        low, high = _words(block, where)
        return KeywordSpec(required, forbidden, low, high, float(block.get("forbidden_penalty", 50.0)))
    if kind == "rubric":
        if not rubric:
            raise SpecError(f"{where}: rubric scoring needs a rubric block in the suite")
        criteria = list(rubric)
        if "topic" in block:
            topic = _patterns(block["topic"], f"{where}.topic")
            criteria.append(
                Criterion(
                    "addresses_topic",
                    "Engages with what the student is actually working on or worried about.",
                    float(block.get("topic_weight", 0.2)),
                    "require",
                    topic,
                )
            )
        low, high = _words(block, where)
        return RubricSpec(tuple(criteria), low, high)
    raise SpecError(f"{where}: unknown scoring type {kind!r} (numeric, unit_tests, keywords, rubric)")
