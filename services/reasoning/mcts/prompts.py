"""Prompts for step generation and judging: previous steps, strategy and the student's state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.reasoning.mcts.strategies import INSTRUCTIONS, Strategy


@dataclass(frozen=True, slots=True)
class StudentState:
    """What the prompts need to know about the student (from the emotion service's result)."""

    learning_state: str = "neutral"  # confused, frustrated, anxious, bored, engaged, confident, neutral
    primary_emotion: str = ""
    readiness: str = ""  # not_ready, low, moderate, high, optimal ("" = unknown)


#: How a step should read for a student in each learning state.
TONE: dict[str, str] = {
    "confused": "The student is confused: make the step very clear, define any term you use, no leaps.",
    "frustrated": "The student is frustrated: keep the step short, concrete and encouraging; no jargon.",
    "anxious": "The student is anxious: be calm and reassuring; one small, safe step.",
    "bored": "The student is bored: be brisk and make the step interesting.",
    "engaged": "The student is engaged: the step may go a little deeper.",
    "confident": "The student is confident: be concise; rigour over hand-holding.",
}

SYSTEM_STEP = (
    "You are a careful tutor thinking through a student's question one step at a time. "
    "Write exactly ONE next reasoning step of at most three sentences, following the given strategy. "
    "Show any calculation as `a = b` so it can be checked. "
    "When this step reaches the answer, end it with a line `Final answer: <answer>`. "
    "Do not repeat earlier steps."
)

SYSTEM_JUDGE = (
    "You grade reasoning steps. Reply with a single number from 0 to 10: how likely the steps so far, "
    "ending with the latest one, lead to a correct answer to the question. 0 = certainly wrong, "
    "10 = certainly right. Reply with the number only."
)


def step_messages(
    query: str,
    previous: Sequence[str],
    strategy: Strategy,
    step_number: int,
    max_depth: int,
    student: StudentState,
    *,
    rejected: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """(role, content) messages asking for step ``step_number`` (1-based) of at most ``max_depth``.

    ``rejected``: final answers already found wrong at this point (a widening retry names them
    so the model tries something else)."""
    lines = [f"Question: {query}", ""]
    if previous:
        lines.append("Steps so far:")
        lines.extend(f"{i}. {text}" for i, text in enumerate(previous, 1))
    else:
        lines.append("Steps so far: none yet.")
    lines.append("")
    lines.append(f"Strategy for this step: {strategy.label} - {INSTRUCTIONS[strategy]}")
    tone = TONE.get(student.learning_state)
    if tone:
        lines.append(tone)
    if student.readiness in ("not_ready", "low"):
        lines.append("Readiness to learn is low right now: prefer the simplest correct route.")
    if rejected:
        lines.append(
            "These answers were already checked here and are wrong: "
            + "; ".join(rejected)
            + ". Take a different approach and recompute carefully."
        )
    lines.append(f"Write step {step_number} of at most {max_depth}.")
    if step_number >= max_depth:
        lines.append("This is the last step allowed: finish with `Final answer: <answer>`.")
    return [("system", SYSTEM_STEP), ("user", "\n".join(lines))]


def judge_messages(query: str, steps: Sequence[str]) -> list[tuple[str, str]]:
    """(role, content) messages asking the judge to score the path ending in ``steps[-1]``."""
    body = [f"Question: {query}", "", "Steps:"]
    body.extend(f"{i}. {text}" for i, text in enumerate(steps, 1))
    body.append("")
    body.append("Score (0-10):")
    return [("system", SYSTEM_JUDGE), ("user", "\n".join(body))]
