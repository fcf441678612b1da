"""Safe parsing and exact evaluation of arithmetic and one-variable equations (no ``eval``).

A tiny recursive-descent parser turns text such as ``12 * (3 + 4)`` or ``2x + 3 = 11`` into
a small AST that is evaluated with :class:`fractions.Fraction`, so checks are exact. Powers are
limited (integer exponents, bounded size) so hostile input cannot burn CPU or memory. What the
verifier does with it (checkable questions, answers, claims in steps) is in ``mathcheck.py``.
"""

from __future__ import annotations

import re
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
SPAN_RE = re.compile(rf"(?:{_NUMBER}|{_VAR}|{_OP})(?:[ \t]*(?:{_NUMBER}|{_VAR}|{_OP}))*")
NORMALISE = str.maketrans({"−": "-", "–": "-", "—": "-", "×": "*", "·": "*", "÷": "/"})

Token = tuple[str, str]  # (kind, text): kind in {"num", "var", "op"}


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; raise :class:`MathError` on anything else."""
    text = text.translate(NORMALISE)
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
