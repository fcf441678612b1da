"""Request bodies of the HTTP API (validated by pydantic; failures become 422 with the field)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CategoryName = Literal["coding", "math", "research", "language", "empathy", "general"]
Role = Literal["system", "user", "assistant"]


class StudentContextIn(BaseModel):
    """What the caller knows about the student right now (all optional)."""

    model_config = ConfigDict(extra="forbid")

    engagement: float | None = Field(None, ge=0, le=1, description="Engagement in [0, 1].")
    cognitive_load: float | None = Field(None, ge=0, le=1, description="Cognitive load in [0, 1].")
    time_on_task_seconds: float | None = Field(None, ge=0, description="Seconds on the current task.")


class HistoryMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str = Field(..., min_length=1)


class ChatRequest(BaseModel):
    """One student turn. The gateway is stateless: earlier turns come back in ``history``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"message": "Why does 0.1 + 0.2 != 0.3 in Python?", "user_id": "s-42", "session_id": "sess-1"}]
        },
    )

    message: str = Field(..., min_length=1, description="The student's message.")
    user_id: str = Field("", max_length=128, description="Student id (emotion history, cost ledger).")
    session_id: str = Field("", max_length=128, description="Chat session id (provider continuity).")
    history: list[HistoryMessage] = Field(default_factory=list, description="Earlier messages, oldest first.")
    category: CategoryName | None = Field(None, description="Category hint; omitted = the router decides.")
    deep_thinking: bool | None = Field(
        None, description="true = run MCTS first; false = never; omitted = when the budget recommends it."
    )
    provider: str = Field("", max_length=64, description="Pin one provider (no fallback).")
    context: StudentContextIn | None = None
    cost_quality: float | None = Field(None, ge=0, le=1, description="0 = cheapest acceptable, 1 = best.")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=32_768)


class EmotionRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "I still don't get recursion and it's driving me mad"}]},
    )

    text: str = Field(..., min_length=1, description="Message to analyse.")
    user_id: str = Field("", max_length=128, description="With a user id the result carries the trajectory.")
    session_id: str = Field("", max_length=128)
    context: StudentContextIn | None = None


class RunBenchmarksRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categories: list[CategoryName] = Field(default_factory=list, description="Empty = every category.")
    providers: list[str] = Field(default_factory=list, description="Empty = every provider the router lists.")
    max_items_per_suite: int = Field(0, ge=0, description="Cap items per suite (0 = all).")


class PracticePlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student_id: str = Field(..., min_length=1, max_length=128)
    slots: int = Field(0, ge=0, le=64, description="0 = default 8.")
    part_types: list[Literal["abacus", "visualization", "linear"]] = Field(default_factory=list)
    terms_per_problem: int = Field(0, ge=0, le=12)
    seed: int = 0


class BoundsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None


class PracticeProblemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student_id: str = Field("", max_length=128)
    purpose: Literal["focus", "reinforce", "review", "challenge"] = "focus"
    part_type: Literal["abacus", "visualization", "linear"] = "abacus"
    terms: int = Field(0, ge=0, le=12)
    digits: int = Field(0, ge=0, le=3)
    bounds: BoundsIn | None = None
    allowed_skills: list[str] = Field(default_factory=list)
    seed: int = 0
    allow_subtraction: bool = False


class PracticeExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trace: dict[str, Any] = Field(..., description="The `trace` object of a generated problem.")


class SkillMasteryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    skill: str = Field(..., min_length=1)
    level: Literal["learning", "practicing", "mastered"]
    last_practiced_at: float = 0
    mastered_at: float = 0


class UpdateMasteryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    skills: list[SkillMasteryIn] = Field(..., min_length=1)


# --- OpenAI-compatible request -------------------------------------------------------------


class OpenAIContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[OpenAIContentPart] | None = None

    def text(self) -> str:
        """Plain text of the message (text parts joined; other part types are rejected earlier)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's chat completions the gateway uses; unknown fields are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1, description='"masterx" or "auto" = routed; a provider name = pinned.')
    messages: list[OpenAIMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    user: str | None = Field(None, max_length=128)
    n: int | None = Field(None, ge=1)
