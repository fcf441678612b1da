"""Recorded intervention outcomes (MongoDB ``emotion_outcomes``), the refit's training data.

Each document keeps what the linear models saw (28 probabilities by label, PAD, context, the
urgency head's P(urgent) and expected score when the model has it), the turn it belongs to
(``turn_id``, when recorded through a stored turn), what
they predicted, what the tutor applied and what happened, plus the message text so a refit
after retraining the emotion model can recompute the probabilities (``refit --recompute``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from masterx_runtime.errors import Unavailable
from services.emotion.learning import StudentContext

OUTCOMES = "emotion_outcomes"
INDEXES = [IndexModel([("created_at", ASCENDING)]), IndexModel([("user_id", ASCENDING)])]

OUTCOME_NAMES = ("resolved", "improved", "no_change", "worsened", "abandoned")


@dataclass(frozen=True)
class Outcome:
    """One observation: model outputs at the time, the applied intervention and its result."""

    user_id: str
    session_id: str
    text: str
    probabilities: dict[str, float]
    pad: tuple[float, float, float]
    context: StudentContext | None
    predicted: dict[str, Any]
    applied_level: str | None
    outcome: str
    observed_state: str | None
    model_version: str
    parameters_version: str
    urgency: dict[str, float] | None = None
    turn_id: str = ""

    def to_doc(self) -> dict[str, Any]:
        ctx = self.context
        return {
            "user_id": self.user_id,
            "session_id": self.session_id,
            "created_at": datetime.now(UTC),
            "text": self.text,
            "probabilities": self.probabilities,
            "pad": list(self.pad),
            "context": {
                k: v
                for k, v in (
                    ("engagement", ctx.engagement if ctx else None),
                    ("cognitive_load", ctx.cognitive_load if ctx else None),
                    ("time_on_task_seconds", ctx.time_on_task_seconds if ctx else None),
                )
                if v is not None
            },
            "predicted": self.predicted,
            "applied_level": self.applied_level,
            "outcome": self.outcome,
            "observed_state": self.observed_state,
            "model_version": self.model_version,
            "parameters_version": self.parameters_version,
            "urgency": self.urgency,
            "turn_id": self.turn_id or None,
        }


async def insert(db: AsyncDatabase[dict[str, Any]], outcome: Outcome, timeout: float | None) -> str:
    """Store one outcome; UNAVAILABLE when MongoDB does not answer."""
    try:
        async with asyncio.timeout(timeout):
            res = await db[OUTCOMES].insert_one(outcome.to_doc())
    except PyMongoError as exc:
        raise Unavailable(f"mongodb unavailable: {type(exc).__name__}", dependency="mongodb") from exc
    return str(res.inserted_id)


def context_of(doc: dict[str, Any]) -> StudentContext | None:
    c = doc.get("context") or {}
    if not c:
        return None
    return StudentContext(c.get("engagement"), c.get("cognitive_load"), c.get("time_on_task_seconds"))
