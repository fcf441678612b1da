"""Find the final answer in a worked solution and compare it numerically.

Tutors explain before they answer, so the *final* answer is what counts: an explicit
``\\boxed{}``, then a "Final answer: ..." / "Answer: ..." line, then the right-hand side of the
last equation, then the last number in the text. Numbers are read robustly: fractions
(``3/4``, ``\\frac{3}{4}``), mixed numbers (``1 1/2``), decimals, thousands separators
(``1,200``), scientific notation (``1.5e3``, ``1.5 × 10^3``), signs (including the Unicode
minus), and units, currency and percent signs are ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

_BOXED = re.compile(r"\\boxed\s*\{")
_FINAL_MARKERS = (
    re.compile(r"final\s+answer\s*(?:is|:|=)?\s*[:=]?\s*(?P<rest>.+)", re.IGNORECASE),
    re.compile(r"\banswer\s*(?:is\s*[:=]?|[:=])\s*(?P<rest>.+)", re.IGNORECASE),
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_UNIT_POWER = re.compile(r"(?<=[A-Za-z])\s*(?:\^\s*\{?\s*[23]\s*\}?|[²³])")
_SCI_TIMES = re.compile(r"(\d(?:\.\d+)?)\s*(?:×|x|\*|\\times|\\cdot|·)\s*10\s*\^\s*\{?\s*([−-]?\d+)\s*\}?")
_ASSIGNED = re.compile(r"(?<![\w])[A-Za-z]\w*\s*=\s*([-+]?\s*\d+(?:\.\d+)?(?:\s*/\s*\d+)?)")
_NUMBER = re.compile(
    r"(?P<sign>[-+])?\s*"
    r"(?:(?P<whole>\d+)\s+(?P<mnum>\d+)\s*/\s*(?P<mden>\d+)(?![\d.])"  # mixed number 1 1/2
    r"|(?P<num>\d+(?:\.\d+)?)\s*/\s*(?P<den>\d+(?:\.\d+)?)"  # fraction 3/4
    r"|(?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+))"  # decimal / 1,200 / 1e3
)


@dataclass(frozen=True)
class NumericCheck:
    """Outcome of comparing an answer with the expected value(s)."""

    correct: bool
    found: tuple[float, ...]
    final_text: str
    how: str


def _balanced(text: str, start: int) -> str:
    depth, out = 1, []
    for ch in text[start:]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                break
        out.append(ch)
    return "".join(out)


def _clean(text: str) -> str:
    return text.replace("**", "").replace("$", " ").replace("\\(", " ").replace("\\)", " ").strip()


def _normalize(text: str) -> str:
    return text.replace("−", "-").replace("–", "-").replace("\u2009", " ").replace("\u00a0", " ")


def extract_final_answer(text: str) -> tuple[str, str]:
    """The piece of text holding the final answer, and how it was found."""
    text = _normalize(text)
    boxed = list(_BOXED.finditer(text))
    if boxed:
        return _balanced(text, boxed[-1].end()), "boxed"
    lines = [_clean(line) for line in text.splitlines() if line.strip()]
    for marker in _FINAL_MARKERS:
        for line in reversed(lines):
            match = marker.search(line)
            if match and _NUMBER.search(match.group("rest")):
                return match.group("rest"), "final-answer line"
    for line in reversed(lines):
        if "=" in line and _NUMBER.search(line.rsplit("=", 1)[1]):
            return line, "last equation"
    for line in reversed(lines):
        if _NUMBER.search(line):
            numbers = list(_NUMBER.finditer(line))
            return line[numbers[-1].start() :], "last number"
    return "", "none"


def parse_numbers(text: str) -> list[float]:
    """Every number written in ``text``, in order (fractions and mixed numbers as one value)."""
    text = _normalize(text)
    text = _LATEX_FRAC.sub(lambda m: f" {m.group(1)}/{m.group(2)} ", text)
    text = text.replace("\\left", "").replace("\\right", "").replace("\\,", "")
    text = _UNIT_POWER.sub(" ", text)
    text = _SCI_TIMES.sub(lambda m: f"{m.group(1)}e{m.group(2).replace('−', '-')}", text)
    values: list[float] = []
    for m in _NUMBER.finditer(text):
        sign = -1.0 if m.group("sign") == "-" and _is_sign(text, m.start()) else 1.0
        try:
            if m.group("whole") is not None:
                value = float(int(m.group("whole")) + Fraction(int(m.group("mnum")), int(m.group("mden"))))
            elif m.group("num") is not None:
                den = float(m.group("den"))
                if den == 0:
                    continue
                value = float(m.group("num")) / den
            else:
                value = float(m.group("dec").replace(",", ""))
        except (ValueError, ZeroDivisionError, OverflowError):
            continue
        if math.isfinite(value):
            values.append(sign * value)
    return values


def _is_sign(text: str, pos: int) -> bool:
    """A '-' directly after a digit or letter is subtraction or a hyphen, not a sign."""
    before = text[:pos].rstrip()
    return not before or not (before[-1].isalnum() or before[-1] in ")]}")


def parse_expected(value: object) -> float:
    """An expected answer from a suite file: a number or a string such as "3/4" or "-2.5"."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        numbers = parse_numbers(value)
        if len(numbers) == 1:
            return numbers[0]
    raise ValueError(f"not a single number: {value!r}")


def close_enough(found: float, expected: float, *, abs_tol: float | None, rel_tol: float | None) -> bool:
    """Integers compare exactly unless a tolerance is given; other values within 0.2 % by default."""
    if abs_tol is None and rel_tol is None:
        if float(expected).is_integer():
            abs_tol, rel_tol = 1e-6, 0.0
        else:
            abs_tol, rel_tol = 1e-9, 2e-3
    return abs(found - expected) <= max(abs_tol or 0.0, (rel_tol or 0.0) * abs(expected))


def check_numeric(
    answer: str,
    expected: list[float],
    *,
    abs_tol: float | None = None,
    rel_tol: float | None = None,
) -> NumericCheck:
    """Compare the final answer with the expected value(s) (a set when there are several)."""
    final_text, how = extract_final_answer(answer)
    found = parse_numbers(final_text)
    if len(expected) == 1:
        if "=" in final_text and parse_numbers(final_text.rsplit("=", 1)[1]):
            found = parse_numbers(final_text.rsplit("=", 1)[1])
        correct = bool(found) and close_enough(found[0], expected[0], abs_tol=abs_tol, rel_tol=rel_tol)
        return NumericCheck(correct, tuple(found[:1]), final_text.strip()[:200], how)
    candidates = [
        [parse_numbers(m.group(1))[0] for m in _ASSIGNED.finditer(_normalize(final_text))],
        parse_numbers(final_text.rsplit("=", 1)[-1]),
        found,
    ]
    for candidate in candidates:
        if _same_set(candidate, expected, abs_tol=abs_tol, rel_tol=rel_tol):
            return NumericCheck(True, tuple(candidate), final_text.strip()[:200], how)
    return NumericCheck(False, tuple(found), final_text.strip()[:200], how)


def _same_set(found: list[float], expected: list[float], *, abs_tol: float | None, rel_tol: float | None) -> bool:
    if len(found) != len(expected):
        return False
    remaining = list(found)
    for value in expected:
        hit = next((f for f in remaining if close_enough(f, value, abs_tol=abs_tol, rel_tol=rel_tol)), None)
        if hit is None:
            return False
        remaining.remove(hit)
    return True


def shows_work(answer: str, min_steps: int = 2) -> bool:
    """True when the answer has at least ``min_steps`` lines with a calculation before the end."""
    steps = 0
    for line in answer.splitlines():
        if re.search(r"\d", line) and re.search(r"[=+\-*/×÷^]|\\frac", line):
            steps += 1
    return steps >= min_steps
