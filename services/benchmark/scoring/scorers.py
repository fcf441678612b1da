"""Turn one provider answer into a 0-100 quality score with the evidence behind it."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.benchmark.scoring.code import extract_code
from services.benchmark.scoring.numeric import check_numeric, shows_work
from services.benchmark.scoring.sandbox import Sandbox
from services.benchmark.scoring.specs import (
    Criterion,
    KeywordSpec,
    NumericSpec,
    RubricSpec,
    Spec,
    UnitTestSpec,
)
from services.benchmark.scoring.text import find, fold, word_count

log = logging.getLogger("masterx.benchmark.scoring")

#: A judge gets (system prompt, user prompt) and returns the judge model's reply text.
Judge = Callable[[str, str], Awaitable[str]]


@dataclass(frozen=True)
class Score:
    quality: float
    scorer: str
    evidence: tuple[str, ...]


def _clamp(value: float) -> float:
    return round(max(0.0, min(100.0, value)), 2)


def _length_penalty(text: str, low: int, high: int, penalty: float, evidence: list[str]) -> float:
    words = word_count(text)
    if low and words < low:
        evidence.append(f"too short: {words} words < {low} (-{penalty:g})")
        return penalty
    if high and words > high:
        evidence.append(f"too long: {words} words > {high} (-{penalty:g})")
        return penalty
    evidence.append(f"length ok: {words} words")
    return 0.0


def score_numeric(spec: NumericSpec, answer: str) -> Score:
    check = check_numeric(answer, list(spec.expected), abs_tol=spec.abs_tol, rel_tol=spec.rel_tol)
    expected = ", ".join(f"{v:g}" for v in spec.expected)
    evidence = [
        f"final answer ({check.how}): {check.final_text!r}",
        f"parsed {[round(v, 6) for v in check.found]} vs expected [{expected}]",
    ]
    if not check.correct:
        evidence.append("incorrect")
        return Score(0.0, "numeric", tuple(evidence))
    quality = 100.0
    if spec.require_work and not shows_work(answer):
        quality -= spec.work_penalty
        evidence.append(f"correct but no worked steps shown (-{spec.work_penalty:g})")
    else:
        evidence.append("correct")
    return Score(_clamp(quality), "numeric", tuple(evidence))


def score_keywords(spec: KeywordSpec, answer: str) -> Score:
    text = fold(answer)
    evidence: list[str] = []
    met = 0
    for group in spec.required:
        hits = group.matches(text)
        if len(hits) >= group.minimum:
            met += 1
            evidence.append(f"has {group.label()}: {hits[: group.minimum]}")
        else:
            evidence.append(f"missing {group.label()} (found {len(hits)})")
    quality = 100.0 * met / len(spec.required) if spec.required else 100.0
    for pattern in spec.forbidden:
        hit = find(pattern, text)
        if hit is not None:
            quality -= spec.forbidden_penalty
            evidence.append(f"forbidden content {hit!r} (-{spec.forbidden_penalty:g})")
    quality -= _length_penalty(answer, spec.min_words, spec.max_words, spec.length_penalty, evidence)
    return Score(_clamp(quality), "keywords", tuple(evidence))


def check_criterion(criterion: Criterion, folded: str) -> tuple[bool, str]:
    hits = [hit for p in criterion.patterns if (hit := find(p, folded)) is not None]
    if criterion.mode == "require":
        return bool(hits), (f"matched {hits[0]!r}" if hits else "no matching phrase")
    return not hits, (f"found {hits[0]!r}" if hits else "none found")


def score_rubric_patterns(spec: RubricSpec, answer: str) -> Score:
    folded = fold(answer)
    evidence: list[str] = []
    total = sum(c.weight for c in spec.criteria)
    earned = 0.0
    for criterion in spec.criteria:
        ok, why = check_criterion(criterion, folded)
        earned += criterion.weight if ok else 0.0
        evidence.append(f"{criterion.name}: {'met' if ok else 'not met'} ({why})")
    quality = 100.0 * earned / total
    quality -= _length_penalty(answer, spec.min_words, spec.max_words, spec.length_penalty, evidence)
    return Score(_clamp(quality), "rubric", tuple(evidence))


JUDGE_SYSTEM = (
    "You grade a tutor's reply to a student for a benchmark. Judge only the criteria given. "
    'Reply with one JSON object and nothing else: {"criteria": {"<name>": true|false, ...}, "reason": "<one sentence>"}.'
)


def judge_prompt(spec: RubricSpec, student: str, answer: str) -> str:
    lines = [f"- {c.name}: {c.description}" for c in spec.criteria]
    return (
        "Criteria:\n" + "\n".join(lines) + "\n\nStudent message:\n<<<\n" + student + "\n>>>\n\n"
        "Tutor reply:\n<<<\n" + answer + "\n>>>\n\nFor each criterion answer true if the reply meets it."
    )


def _first_json_object(text: str) -> dict[str, object] | None:
    start = text.find("{")
    while start != -1:
        depth = 0
        for end in range(start, len(text)):
            if text[end] == "{":
                depth += 1
            elif text[end] == "}":
                depth -= 1
                if depth == 0:
                    try:
                        value = json.loads(text[start : end + 1])
                    except ValueError:
                        break
                    return value if isinstance(value, dict) else None
        start = text.find("{", start + 1)
    return None


def _verdict(value: object) -> bool | None:
    if isinstance(value, dict):
        value = value.get("met")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "met", "no", "false", "not met"):
        return value.strip().lower() in ("yes", "true", "met")
    return None


def parse_judge_reply(spec: RubricSpec, reply: str) -> dict[str, bool] | None:
    """The judge's verdict per criterion, or None when the reply does not cover every criterion."""
    obj = _first_json_object(reply)
    if obj is None:
        return None
    raw = obj.get("criteria", obj)
    if not isinstance(raw, dict):
        return None
    verdicts: dict[str, bool] = {}
    for criterion in spec.criteria:
        verdict = _verdict(raw.get(criterion.name))
        if verdict is None:
            return None
        verdicts[criterion.name] = verdict
    return verdicts


class ItemScorer:
    """Scores answers; owns the sandbox for code and the optional judge for rubrics."""

    def __init__(self, sandbox: Sandbox, judge: Judge | None = None) -> None:
        self.sandbox = sandbox
        self.judge = judge

    async def score(self, spec: Spec, answer: str, prompt: str = "") -> Score:
        if isinstance(spec, NumericSpec):
            return score_numeric(spec, answer)
        if isinstance(spec, KeywordSpec):
            return score_keywords(spec, answer)
        if isinstance(spec, UnitTestSpec):
            return await self.score_unit_tests(spec, answer)
        return await self.score_rubric(spec, answer, prompt)

    async def score_unit_tests(self, spec: UnitTestSpec, answer: str) -> Score:
        code, how = extract_code(answer, spec.entry_point)
        evidence = [f"code: {how}"]
        if not code:
            return Score(0.0, "unit_tests", tuple(evidence))
        result = await self.sandbox.run(code, spec.tests)
        evidence.append(f"sandbox {self.sandbox.mode}: {result.duration_ms:.0f} ms, exit {result.exit_code}")
        failure = result.contained_failure
        if failure and (result.timed_out or result.output_exceeded or result.compile_error or result.module_error):
            evidence.append(failure)
            return Score(0.0, "unit_tests", tuple(evidence))
        if failure:
            evidence.append(failure + "; unreported tests count as failed")
        evidence.append(f"tests passed {result.passed}/{result.total}")
        for outcome in result.tests:
            if not outcome.ok:
                evidence.append(f"test {outcome.index} failed: {outcome.error or 'assertion failed'}")
        return Score(_clamp(100.0 * result.passed / max(1, result.total)), "unit_tests", tuple(evidence))

    async def score_rubric(self, spec: RubricSpec, answer: str, prompt: str) -> Score:
        if self.judge is None:
            return score_rubric_patterns(spec, answer)
        try:
            reply = await self.judge(JUDGE_SYSTEM, judge_prompt(spec, prompt, answer))
        except Exception as exc:  # any judge failure falls back to the rubric's own checks
            log.warning("judge failed, using rubric patterns", extra={"error": str(exc)[:200]})
            fallback = score_rubric_patterns(spec, answer)
            return Score(fallback.quality, "rubric", (f"judge failed: {str(exc)[:160]}", *fallback.evidence))
        verdicts = parse_judge_reply(spec, reply)
        if verdicts is None:
            fallback = score_rubric_patterns(spec, answer)
            return Score(fallback.quality, "rubric", (f"judge reply unusable: {reply[:160]!r}", *fallback.evidence))
        total = sum(c.weight for c in spec.criteria)
        earned = sum(c.weight for c in spec.criteria if verdicts[c.name])
        evidence = [f"{name}: {'met' if ok else 'not met'} (judge)" for name, ok in verdicts.items()]
        quality = 100.0 * earned / total
        quality -= _length_penalty(answer, spec.min_words, spec.max_words, spec.length_penalty, evidence)
        return Score(_clamp(quality), "judge", tuple(evidence))
