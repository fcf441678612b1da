"""Request bodies of the HTTP API (validated by pydantic; failures become 422 with the field).

Every body model forbids NaN and infinity, every integer is bounded so it fits the proto field
it becomes (int32/int64), every free-text field has a cap, and user ids follow the one rule
shared with the services (masterx_runtime.validation).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from masterx_runtime.validation import (
    INT32_RANGE,
    INT64_RANGE,
    RULES,
    USER_ID_MAX_CHARS,
    USER_ID_PATTERN,
    user_id_problem,
)

CategoryName = Literal["coding", "math", "research", "language", "empathy", "general"]
Role = Literal["system", "user", "assistant"]

#: Longest free text in any body (characters): the services' default string cap.
MAX_TEXT_CHARS = RULES.max_string_chars
#: Most elements of any list in a body.
MAX_ITEMS = 256


def _user_id_or_empty(value: str) -> str:
    if value and (problem := user_id_problem(value)):
        raise ValueError(f"user id {problem}")
    return value


def _user_id(value: str) -> str:
    if problem := user_id_problem(value):
        raise ValueError(f"user id {problem}")
    return value


#: Optional student id ("" = none); otherwise the shared user id rule.
OptionalUserId = Annotated[str, Field(max_length=USER_ID_MAX_CHARS), AfterValidator(_user_id_or_empty)]
#: Required student id, the shared user id rule.
UserId = Annotated[str, Field(min_length=1, max_length=USER_ID_MAX_CHARS), AfterValidator(_user_id)]
Int32 = Annotated[int, Field(ge=INT32_RANGE[0], le=INT32_RANGE[1])]
Int64 = Annotated[int, Field(ge=INT64_RANGE[0], le=INT64_RANGE[1])]
ShortText = Annotated[str, Field(max_length=256)]
#: A student id in a URL path.
PathUserId = Annotated[str, Path(min_length=1, max_length=USER_ID_MAX_CHARS, pattern=USER_ID_PATTERN)]


class _Body(BaseModel):
    """Base of every body: no NaN or infinity in any float field."""

    model_config = ConfigDict(allow_inf_nan=False)


class StudentContextIn(_Body):
    """What the caller knows about the student right now (all optional)."""

    model_config = ConfigDict(extra="forbid")

    engagement: float | None = Field(None, ge=0, le=1, description="Engagement in [0, 1].")
    cognitive_load: float | None = Field(None, ge=0, le=1, description="Cognitive load in [0, 1].")
    time_on_task_seconds: float | None = Field(None, ge=0, le=31_536_000, description="Seconds on the current task.")


class HistoryMessage(_Body):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS)


class ChatRequest(_Body):
    """One student turn. The gateway is stateless: earlier turns come back in ``history``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"message": "Why does 0.1 + 0.2 != 0.3 in Python?", "user_id": "s-42", "session_id": "sess-1"}]
        },
    )

    message: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="The student's message.")
    user_id: OptionalUserId = Field(
        "", description="Student id (emotion history, cost ledger); with sign-in: the token's student."
    )
    session_id: str = Field("", max_length=128, description="Chat session id (provider continuity).")
    history: list[HistoryMessage] = Field(
        default_factory=list, max_length=RULES.max_items, description="Earlier messages, oldest first."
    )
    category: CategoryName | None = Field(None, description="Category hint; omitted = the router decides.")
    deep_thinking: bool | None = Field(
        None, description="true = run MCTS first; false = never; omitted = when the budget recommends it."
    )
    provider: str = Field("", max_length=64, description="Pin one provider (no fallback).")
    context: StudentContextIn | None = None
    cost_quality: float | None = Field(None, ge=0, le=1, description="0 = cheapest acceptable, 1 = best.")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=32_768)


class EmotionRequest(_Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "I still don't get recursion and it's driving me mad"}]},
    )

    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="Message to analyse.")
    user_id: OptionalUserId = Field("", description="With a user id the result carries the trajectory.")
    session_id: str = Field("", max_length=128)
    context: StudentContextIn | None = None


OutcomeName = Literal["resolved", "improved", "no_change", "worsened", "abandoned"]
LearningStateName = Literal["confused", "frustrated", "anxious", "bored", "engaged", "confident", "neutral"]


class OutcomeRequest(_Body):
    """What happened after one tutor turn: the student's "did this help?" or a finer outcome."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"turn_id": "3f2a9c0d1e", "user_id": "s-42", "helped": True}]},
    )

    turn_id: str = Field(
        ...,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:@\-]+$",
        description="The request_id of the chat (or emotion) answer given to this user.",
    )
    user_id: OptionalUserId = Field(
        "", description="The student the turn was analysed for (with sign-in: the token's student when omitted)."
    )
    helped: bool | None = Field(
        None, description="One click: true = the reply helped (outcome improved), false = it did not (no_change)."
    )
    outcome: OutcomeName | None = Field(None, description="A finer outcome instead of `helped`.")
    observed_state: LearningStateName | None = Field(None, description="Learning state a person judged correct.")
    session_id: str = Field("", max_length=128)


class RunBenchmarksRequest(_Body):
    model_config = ConfigDict(extra="forbid")

    categories: list[CategoryName] = Field(default_factory=list, description="Empty = every category.")
    providers: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Empty = every provider the router lists."
    )
    max_items_per_suite: int = Field(0, ge=0, le=100_000, description="Cap items per suite (0 = all).")


class PracticePlanRequest(_Body):
    model_config = ConfigDict(extra="forbid")

    student_id: OptionalUserId = Field("", description="The student; with sign-in: the token's student when omitted.")
    slots: int = Field(0, ge=0, le=64, description="0 = default 8.")
    part_types: list[Literal["abacus", "visualization", "linear"]] = Field(default_factory=list)
    terms_per_problem: int = Field(0, ge=0, le=12)
    seed: Int64 = 0


class BoundsIn(_Body):
    model_config = ConfigDict(extra="forbid")

    min: float | None = Field(None, ge=-1e6, le=1e6)
    max: float | None = Field(None, ge=-1e6, le=1e6)


class PracticeProblemRequest(_Body):
    model_config = ConfigDict(extra="forbid")

    student_id: OptionalUserId = ""
    purpose: Literal["focus", "reinforce", "review", "challenge"] = "focus"
    part_type: Literal["abacus", "visualization", "linear"] = "abacus"
    terms: int = Field(0, ge=0, le=12)
    digits: int = Field(0, ge=0, le=3)
    bounds: BoundsIn | None = None
    allowed_skills: list[ShortText] = Field(default_factory=list, max_length=MAX_ITEMS)
    seed: Int64 = 0
    allow_subtraction: bool = False


class PracticeExplainRequest(_Body):
    model_config = ConfigDict(extra="forbid")

    trace: dict[str, Any] = Field(..., description="The `trace` object of a generated problem.")


class SkillMasteryIn(_Body):
    model_config = ConfigDict(extra="forbid")

    skill: str = Field(..., min_length=1, max_length=256)
    level: Literal["learning", "practicing", "mastered"]
    last_practiced_at: float = Field(0, ge=0, le=1e11)
    mastered_at: float = Field(0, ge=0, le=1e11)


class UpdateMasteryIn(_Body):
    model_config = ConfigDict(extra="forbid")

    skills: list[SkillMasteryIn] = Field(..., min_length=1, max_length=1024)


# --- OpenAI-compatible request -------------------------------------------------------------


class OpenAIContentPart(_Body):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)


class OpenAIMessage(_Body):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | list[OpenAIContentPart] | None = None

    def text(self) -> str:
        """Plain text of the message (text parts joined; other part types are rejected earlier)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(_Body):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(_Body):
    """The fields of OpenAI's chat completions the gateway uses; unknown fields are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(
        ..., min_length=1, max_length=128, description='"masterx" or "auto" = routed; a provider name = pinned.'
    )
    messages: list[OpenAIMessage] = Field(..., min_length=1, max_length=RULES.max_items)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop: ShortText | Annotated[list[ShortText], Field(max_length=16)] | None = None
    user: OptionalUserId | None = None
    n: int | None = Field(None, ge=1, le=128)
