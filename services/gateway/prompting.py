"""The messages a tutor chat turn sends to the router.

The system prompt gets two optional additions: how to adapt to the student's state (from the
emotion service's learning state and intervention level) and, after deep thinking, the best
reasoning path the MCTS found, so the answer explains a checked solution instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence

from masterx.common.v1 import common_pb2
from masterx.reasoning.v1 import reasoning_pb2

LS = common_pb2.LearningState
IL = common_pb2.InterventionLevel

_STATE_HINTS: dict[int, str] = {
    LS.LEARNING_STATE_CONFUSED: "The student seems confused: slow down, define terms, use one small example.",
    LS.LEARNING_STATE_FRUSTRATED: (
        "The student seems frustrated: acknowledge it briefly, then give one small, achievable next step."
    ),
    LS.LEARNING_STATE_ANXIOUS: "The student seems anxious: be calm and reassuring, and keep the steps short.",
    LS.LEARNING_STATE_BORED: "The student seems disengaged: be concise and add a quick challenge or question.",
    LS.LEARNING_STATE_ENGAGED: "The student is engaged: keep the momentum and go a little deeper.",
    LS.LEARNING_STATE_CONFIDENT: "The student feels confident: be brief and offer a harder follow-up.",
}


def adaptation(emotion: common_pb2.EmotionResult | None) -> str:
    """One or two sentences on how to answer this student now ("" without a signal)."""
    if emotion is None:
        return ""
    parts = []
    if hint := _STATE_HINTS.get(emotion.learning_state):
        parts.append(hint)
    if emotion.intervention.level >= IL.INTERVENTION_LEVEL_HIGH:
        parts.append("Check in on how they are doing before moving on.")
    return " ".join(parts)


def reasoning_context(result: reasoning_pb2.ReasonResult) -> str:
    """The MCTS best path as notes for the answer."""
    lines = ["A step-by-step search worked on this question first. Its best path:"]
    lines += [f"{i}. {s.content.strip()}" for i, s in enumerate(result.path, 1) if s.content.strip()]
    if result.answer:
        lines.append(f"Proposed answer: {result.answer} (confidence {result.confidence:.2f}).")
    lines.append("Use these notes to explain the solution to the student; correct them if they are wrong.")
    return "\n".join(lines)


def tutor_messages(
    system_prompt: str,
    history: Sequence[tuple[str, str]],
    message: str,
    emotion: common_pb2.EmotionResult | None,
    reasoning: reasoning_pb2.ReasonResult | None,
) -> list[common_pb2.ChatMessage]:
    """System prompt (with adaptation and reasoning notes), earlier turns, the new message."""
    system = "\n\n".join(p for p in (system_prompt, adaptation(emotion)) if p)
    if reasoning is not None and (reasoning.path or reasoning.answer):
        system = f"{system}\n\n{reasoning_context(reasoning)}" if system else reasoning_context(reasoning)
    out = [common_pb2.ChatMessage(role="system", content=system)] if system else []
    out += [common_pb2.ChatMessage(role=r, content=c) for r, c in history if r != "system"]
    out.append(common_pb2.ChatMessage(role="user", content=message))
    return out
