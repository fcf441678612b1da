"""Safe parsing and exact evaluation of arithmetic and one-variable equations (no ``eval``).

A tiny recursive-descent parser turns text such as ``12 * (3 + 4)`` or ``2x + 3 = 11`` into
a small AST that is evaluated with :class:`fractions.Fraction`, so checks are exact. Powers are
limited (integer exponents, bounded size) so hostile input cannot burn CPU or memory.

The verifier uses three things from here: :func:`find_problem` (is the question checkable?),
:meth:`CheckableProblem.check` (does a stated answer solve it?) and :func:`check_claims`
(are the ``a = b`` computations written inside a reasoning step true?).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

MAX_EXPONENT = 64
MAX_DIGITS = 200  # numerator/denominator size cap while evaluating
MAX_TOKENS = 256


class MathError(ValueError):
    """Text is not a well-formed expression, or evaluating it is undefined or too large."""


# --- tokens -----------------------------------------------------------------------------

_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_VAR = r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])"
_OP = r"\*\*|[-+*/×÷·^()=]"
_TOKEN_RE = re.compile(rf"\s*(?:(?P<num>{_NUMBER})|(?P<var>{_VAR})|(?P<op>{_OP}))")
# A run of math tokens inside free text (used to find expressions in questions and steps).
_SPAN_RE = re.compile(rf"(?:{_NUMBER}|{_VAR}|{_OP})(?:[ \t]*(?:{_NUMBER}|{_VAR}|{_OP}))*")
_NORMALISE = str.maketrans({"−": "-", "–": "-", "—": "-", "×": "*", "·": "*", "÷": "/"})

Token = tuple[str, str]  # (kind, text): kind in {"num", "var", "op"}


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; raise :class:`MathError` on anything else."""
    text = text.translate(_NORMALISE)
    tokens: list[Token] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise MathError(f"unexpected character {text[pos : pos + 1]!r} at {pos}")
        kind = m.lastgroup or "op"
        tokens.append((kind, m.group(kind)))
        pos = m.end()
        if len(tokens) > MAX_TOKENS:
            raise MathError("expression too long")
    return tokens


# --- AST --------------------------------------------------------------------------------

# ("num", Fraction) | ("var", name) | ("neg", node) | (op, left, right) with op in + - * / ^
Node = tuple[Any, ...]


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/'|implicit) unary)* ;
    unary := ('+'|'-') unary | power ; power := atom ('^' unary)? ; atom := num | var | '(' expr ')'."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise MathError("unexpected end of expression")
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok != ("op", text):
            raise MathError(f"expected {text!r}, got {tok[1]!r}")

    def parse(self) -> Node:
        node = self.expr()
        if self.peek() is not None:
            raise MathError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def expr(self) -> Node:
        node = self.term()
        while (tok := self.peek()) in (("op", "+"), ("op", "-")):
            self.i += 1
            node = (tok[1], node, self.term())  # type: ignore[index]
        return node

    def term(self) -> Node:
        node = self.unary()
        while True:
            tok = self.peek()
            if tok in (("op", "*"), ("op", "/")):
                self.i += 1
                node = (tok[1], node, self.unary())  # type: ignore[index]
            elif tok is not None and (tok[0] in ("num", "var") or tok == ("op", "(")):
                # implicit multiplication: 2x, 3(x+1), (a)(b), x y
                node = ("*", node, self.power())
            else:
                return node

    def unary(self) -> Node:
        tok = self.peek()
        if tok == ("op", "-"):
            self.i += 1
            return ("neg", self.unary())
        if tok == ("op", "+"):
            self.i += 1
            return self.unary()
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.peek() in (("op", "^"), ("op", "**")):
            self.i += 1
            return ("^", base, self.unary())
        return base

    def atom(self) -> Node:
        kind, text = self.take()
        if kind == "num":
            return ("num", Fraction(text))
        if kind == "var":
            return ("var", text)
        if text == "(":
            node = self.expr()
            self.expect(")")
            return node
        raise MathError(f"unexpected {text!r}")


def parse(text: str) -> Node:
    """Parse one expression (no ``=``)."""
    tokens = tokenize(text)
    if not tokens:
        raise MathError("empty expression")
    if ("op", "=") in tokens:
        raise MathError("'=' inside an expression")
    return _Parser(tokens).parse()


def variables(node: Node) -> set[str]:
    if node[0] == "var":
        return {node[1]}  # type: ignore[arg-type]
    if node[0] == "num":
        return set()
    out: set[str] = set()
    for child in node[1:]:
        out |= variables(child)  # type: ignore[arg-type]
    return out


def _check_size(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_DIGITS * 3.33 or value.denominator.bit_length() > MAX_DIGITS * 3.33:
        raise MathError("number too large")
    return value


def evaluate(node: Node, env: dict[str, Fraction] | None = None) -> Fraction:
    """Exact value of ``node``; variables come from ``env``."""
    op = node[0]
    if op == "num":
        return node[1]  # type: ignore[return-value]
    if op == "var":
        name = node[1]
        if env is None or name not in env:
            raise MathError(f"unknown variable {name!r}")
        return env[name]  # type: ignore[index]
    if op == "neg":
        return -evaluate(node[1], env)  # type: ignore[arg-type]
    left = evaluate(node[1], env)  # type: ignore[arg-type,misc]
    right = evaluate(node[2], env)  # type: ignore[arg-type,misc]
    if op == "+":
        return _check_size(left + right)
    if op == "-":
        return _check_size(left - right)
    if op == "*":
        return _check_size(left * right)
    if op == "/":
        if right == 0:
            raise MathError("division by zero")
        return _check_size(left / right)
    if op == "^":
        if right.denominator != 1 or abs(right) > MAX_EXPONENT:
            raise MathError("only integer exponents up to 64 are supported")
        if left == 0 and right < 0:
            raise MathError("division by zero")
        return _check_size(left ** int(right))
    raise MathError(f"unknown operator {op!r}")


# --- answers ----------------------------------------------------------------------------

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
    text = _TIMES_X_RE.sub(" * ", text.translate(_NORMALISE))
    if "%" in text:
        text = _PERCENT_RE.sub(r"(\1/100)", _PERCENT_OF_RE.sub(r"(\1/100) * ", text))
    out = []
    for m in _SPAN_RE.finditer(text):
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
