"""Checking arithmetic in questions, answers and reasoning steps (exact, no ``eval``).

Expressions are parsed and evaluated exactly by ``expr.py`` (re-exported here). The verifier
uses three things from here: :func:`find_problem` (is the question checkable?),
:meth:`CheckableProblem.check` (does a stated answer solve it?) and :func:`check_claims`
(are the ``a = b`` computations written inside a reasoning step true?).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from fractions import Fraction

from services.reasoning.mcts.expr import NORMALISE, SPAN_RE, MathError, Node, evaluate, parse, tokenize, variables

__all__ = [
    "CheckableProblem",
    "ClaimCheck",
    "MathError",
    "answer_number",
    "check_claims",
    "evaluate",
    "find_problem",
    "parse",
    "parse_number",
    "tokenize",
]

_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
_ASSIGN_RE = re.compile(r"^\s*[A-Za-z]\s*=\s*")


def parse_number(text: str) -> Fraction | None:
    """The number a final answer states (``5``, ``-2.5``, ``x = 7/2``, ``\\boxed{3}``, ``12 apples``)."""
    boxed = _BOXED_RE.search(text)
    if boxed:
        text = boxed.group(1)
    text = text.replace("$", "").replace(",", "").strip().rstrip(".").strip()
    text = _ASSIGN_RE.sub("", text)
    for span in _spans(text):
        try:
            node = parse(span)
        except MathError:
            continue
        if variables(node):
            continue
        try:
            return evaluate(node)
        except MathError:
            return None
    return None


def _plain(node: Node) -> bool:
    """A number as written in an answer: ``5``, ``-2.5``, ``7/2``, ``-7/2`` (no other operators)."""
    if node[0] == "num":
        return True
    if node[0] == "neg":
        return node[1][0] != "neg" and _plain(node[1])
    return node[0] == "/" and all(n[0] == "num" or (n[0] == "neg" and n[1][0] == "num") for n in node[1:])


def answer_number(text: str) -> Fraction | None:
    """Like :func:`parse_number`, but the first math in ``text`` must be a plain number: an answer
    that restates the question (``6 + 5 * 4``) or an unfinished computation is not an answer."""
    boxed = _BOXED_RE.search(text)
    if boxed:
        text = boxed.group(1)
    text = _ASSIGN_RE.sub("", text.replace("$", "").replace(",", "").strip().rstrip(".").strip())
    for span in _spans(text):
        try:
            node = parse(span)
        except MathError:
            continue
        if variables(node) or not _plain(node):
            return None
        try:
            return evaluate(node)
        except MathError:
            return None
    return None


def decimals_of(text: str) -> int:
    """Decimal places written in a numeric answer (0 for integers and fractions)."""
    m = re.search(r"\d\.(\d+)", text)
    return len(m.group(1)) if m else 0


_TIMES_X_RE = re.compile(r"(?<=\d)\s+x\s+(?=\d)")
_LEADING_WORD_RE = re.compile(r"^[A-Za-z]\s+(?=[\d.A-Za-z(])")
_TRAILING_WORD_RE = re.compile(r"(?<=[\d.)A-Za-z])\s+[A-Za-z]$")


_PERCENT_OF_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*%\s*of\b\s*", re.IGNORECASE)
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*%")


def _spans(text: str) -> list[str]:
    """Runs of math tokens in free text; ``3 x 4`` means times, ``15% of 80`` means
    ``(15/100) * 80`` (and ``15%`` alone ``(15/100)``), and a lone letter separated by a space at
    either end (``a 3 + 4``, ``= 4 a``) is prose, not a variable."""
    text = _TIMES_X_RE.sub(" * ", text.translate(NORMALISE))
    if "%" in text:
        text = _PERCENT_RE.sub(r"(\1/100)", _PERCENT_OF_RE.sub(r"(\1/100) * ", text))
    out = []
    for m in SPAN_RE.finditer(text):
        span = _TRAILING_WORD_RE.sub("", _LEADING_WORD_RE.sub("", m.group(0).strip()))
        if span:
            out.append(span)
    return out


# --- checkable problems -------------------------------------------------------------------


@dataclass(frozen=True)
class CheckableProblem:
    """An arithmetic expression (``equation`` False) or a one-variable equation in ``variable``."""

    source: str
    lhs: Node
    rhs: Node | None
    variable: str | None
    value: Fraction | None  # the expression's value, or the root of a linear equation

    @property
    def kind(self) -> str:
        return "equation" if self.rhs is not None else "arithmetic"

    def check(self, answer: str) -> bool:
        """True when ``answer`` is the expression's value or a root of the equation, stated as a
        plain number (an expression such as the question itself is not accepted).

        A decimal answer is accepted when it is the true value correctly rounded to the places
        it shows (``0.333`` for 1/3); integers and fractions must be exact.
        """
        numbers = [answer_number(part) for part in _split_answers(answer)]
        if not numbers or any(n is None for n in numbers):
            return False
        places = decimals_of(answer)
        tolerance = Fraction(1, 2 * 10**places) if places else Fraction(0)
        if self.rhs is None:
            assert self.value is not None
            return len(numbers) == 1 and abs(numbers[0] - self.value) <= tolerance  # type: ignore[operator]
        return all(self._is_root(n, tolerance) for n in numbers)  # type: ignore[arg-type]

    def _residual(self, x: Fraction) -> Fraction:
        env = {self.variable: x} if self.variable else {}
        return evaluate(self.lhs, env) - evaluate(self.rhs, env)  # type: ignore[arg-type]

    def _is_root(self, x: Fraction, tolerance: Fraction) -> bool:
        try:
            if self.value is not None:  # linear: compare with the exact root
                return abs(x - self.value) <= tolerance
            if self._residual(x) == 0:
                return True
            if tolerance == 0:
                return False
            # a rounded root: the residual changes sign inside the rounding interval
            lo, hi = self._residual(x - tolerance), self._residual(x + tolerance)
            return lo == 0 or hi == 0 or (lo < 0) != (hi < 0)
        except MathError:
            return False


_ANSWER_SPLIT_RE = re.compile(r"\s*(?:\bor\b|\band\b|;|,(?!\d{3}\b))\s*")


def _split_answers(answer: str) -> list[str]:
    return [p for p in _ANSWER_SPLIT_RE.split(answer.strip()) if p.strip()]


def _linear_root(lhs: Node, rhs: Node, var: str) -> Fraction | None:
    """Root of lhs = rhs when it is linear in ``var`` (checked at three points), else None."""
    f = lambda x: evaluate(lhs, {var: x}) - evaluate(rhs, {var: x})  # noqa: E731
    try:
        f0, f1, f2 = f(Fraction(0)), f(Fraction(1)), f(Fraction(2))
    except MathError:
        return None
    slope = f1 - f0
    if slope == 0 or f2 - f1 != slope:
        return None
    root = -f0 / slope
    try:
        return root if f(root) == 0 else None
    except MathError:
        return None


def find_problem(question: str) -> CheckableProblem | None:
    """The checkable problem stated in ``question``: the longest one-variable equation, else the
    longest arithmetic expression with at least one operator; None when there is neither."""
    equations: list[CheckableProblem] = []
    expressions: list[CheckableProblem] = []
    for span in _spans(question):
        sides = span.split("=")
        if len(sides) == 2 and sides[0].strip() and sides[1].strip():
            try:
                lhs, rhs = parse(sides[0]), parse(sides[1])
            except MathError:
                continue
            names = variables(lhs) | variables(rhs)
            if len(names) == 1:
                var = next(iter(names))
                equations.append(CheckableProblem(span, lhs, rhs, var, _linear_root(lhs, rhs, var)))
        elif len(sides) == 1 and any(op in span for op in "+-*/^"):
            try:
                node = parse(span)
                if variables(node) or node[0] in ("num", "neg"):
                    continue
                expressions.append(CheckableProblem(span, node, None, None, evaluate(node)))
            except MathError:
                continue
    if equations:
        return max(equations, key=lambda p: len(p.source))
    if expressions:
        return max(expressions, key=lambda p: len(p.source))
    return None


@dataclass(frozen=True)
class ClaimCheck:
    """Numeric ``a = b`` claims found in a step and how many were false."""

    claims: int
    wrong: int


def check_claims(text: str) -> ClaimCheck:
    """Check every purely numeric equality chain in ``text`` (``3 * 4 = 12``, ``2 + 3 = 5 = 5``)."""
    claims = wrong = 0
    for span in _spans(text):
        parts = span.split("=")
        if len(parts) < 2:
            continue
        values: list[tuple[Fraction, int] | None] = []
        for part in parts:
            try:
                node = parse(part) if part.strip() else None
                ok = node is not None and not variables(node)
                values.append((evaluate(node), decimals_of(part)) if ok else None)  # type: ignore[arg-type]
            except MathError:
                values.append(None)
        for a, b in itertools.pairwise(values):
            if a is None or b is None:
                continue
            claims += 1
            places = max(a[1], b[1])  # a side written as a rounded decimal is checked to its places
            tolerance = Fraction(1, 2 * 10**places) if places else Fraction(0)
            if abs(a[0] - b[0]) > tolerance:
                wrong += 1
    return ClaimCheck(claims, wrong)
