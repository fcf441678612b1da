"""Terminal detection (a step that states a final answer) and answer canonicalisation for voting."""

from __future__ import annotations

import re
from fractions import Fraction

from services.reasoning.mcts.mathcheck import parse_number

# "Final answer: 42", "**Final Answer:** x = 3", "The final answer is 7.", "\boxed{12}"
_FINAL_RE = re.compile(
    r"\bfinal\s+answer[*_\s]*(?::|：|=|\bis\b)[*_\s]*(?P<answer>[^\n]+)",
    re.IGNORECASE,
)
_BOXED_RE = re.compile(r"\\boxed\{(?P<answer>[^{}]+)\}")
# Weaker models skip the marker: "The answer is 3/4.", "Answer: x = 5" (a number must follow).
_ANSWER_IS_RE = re.compile(
    r"\banswer\s*(?::|\bis\b)[*_\s]*(?P<answer>(?:[A-Za-z]\s*=\s*)?[-+$(]?\s*\.?\d[^\n]*)",
    re.IGNORECASE,
)
_TRIM = " \t*_`'\"$.。!"


def extract_final_answer(step: str) -> str | None:
    """The answer a step states as final, or None when the step is not terminal: ``Final answer:
    ...`` (or ``The final answer is ...``), ``\\boxed{...}``, else ``The answer is <number>`` /
    ``Answer: <number>`` (what small models write instead)."""
    m = _FINAL_RE.search(step) or _BOXED_RE.search(step) or _ANSWER_IS_RE.search(step)
    if m is None:
        return None
    answer = m.group("answer").strip().strip(_TRIM).strip()
    return answer or None


def format_number(value: Fraction) -> str:
    """Canonical text of a number: ``5``, ``-2.5``, ``1/3`` (non-terminating decimals stay fractions)."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:  # terminating decimal
        text = f"{float(value):.12f}".rstrip("0").rstrip(".")
        if Fraction(text) == value:
            return text
    return f"{value.numerator}/{value.denominator}"


_SPACE_RE = re.compile(r"\s+")
_ASSIGN_RE = re.compile(r"^[A-Za-z]\s*=\s*")


def canonical_answer(answer: str) -> str:
    """Key under which equal answers are counted together when voting.

    Numbers compare by value (``4``, ``4.0``, ``x = 4`` and ``8/2`` are one answer, while a
    rounded decimal stays distinct from the exact fraction); anything else by lower-cased text
    with collapsed spaces.
    """
    stripped = _ASSIGN_RE.sub("", answer.strip().strip(_TRIM))
    number = parse_number(stripped)
    if number is not None and _is_plain_number(stripped):
        return format_number(number)
    return _SPACE_RE.sub(" ", stripped.lower()).strip(_TRIM)


_PLAIN_NUMBER_RE = re.compile(r"^[-+]?\s*(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?$|^\\boxed\{.*\}$")


def _is_plain_number(text: str) -> bool:
    return bool(_PLAIN_NUMBER_RE.match(text.replace("$", "").strip()))
