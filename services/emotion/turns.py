"""Analysed turns kept for a while, so an outcome can name the turn it belongs to.

An Analyze call with a ``user_id`` and a ``request_id`` stores the turn in MongoDB
``emotion_turns`` (``_id`` = ``<user_id>/<request_id>``) in the background: the probabilities,
PAD, urgency, context and what the service predicted. ``RecordOutcome(turn_id=...)`` reads it
back as the outcome's evidence; a turn unknown for that user (never analysed, expired after
``EMOTION_TURN_TTL_SECONDS``, or stored for another user) is NOT_FOUND. Writes are off
Analyze's critical path; a turn whose write is still pending is served from memory, so an
outcome posted right after the answer finds its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from masterx_runtime.errors import NotFound, Unavailable

log = logging.getLogger("masterx.emotion.turns")

TURNS = "emotion_turns"


def indexes(ttl_seconds: int) -> list[IndexModel]:
    """TTL index on ``created_at`` (MongoDB drops expired turns; reads also check the age)."""
    return [IndexModel([("created_at", ASCENDING)], expireAfterSeconds=ttl_seconds)]


def turn_key(user_id: str, turn_id: str) -> str:
    return f"{user_id}/{turn_id}"


@dataclass(frozen=True)
class Turn:
    """One analysed message as the outcome loop needs it."""

    user_id: str
    turn_id: str
    session_id: str
    probabilities: dict[str, float]
    pad: tuple[float, float, float]
    context: dict[str, float]
    urgency: dict[str, float] | None
    predicted: dict[str, Any]
    model_version: str
    parameters_version: str

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": turn_key(self.user_id, self.turn_id),
            "user_id": self.user_id,
            "turn_id": self.turn_id,
            "session_id": self.session_id,
            "created_at": datetime.now(UTC),
            "probabilities": self.probabilities,
            "pad": list(self.pad),
            "context": self.context,
            "urgency": self.urgency,
            "predicted": self.predicted,
            "model_version": self.model_version,
            "parameters_version": self.parameters_version,
        }

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Turn:
        p = d.get("pad") or [0.5, 0.5, 0.5]
        return cls(
            user_id=str(d.get("user_id", "")),
            turn_id=str(d.get("turn_id", "")),
            session_id=str(d.get("session_id", "")),
            probabilities={str(k): float(v) for k, v in (d.get("probabilities") or {}).items()},
            pad=(float(p[0]), float(p[1]), float(p[2])),
            context={str(k): float(v) for k, v in (d.get("context") or {}).items()},
            urgency=d.get("urgency"),
            predicted=dict(d.get("predicted") or {}),
            model_version=str(d.get("model_version", "")),
            parameters_version=str(d.get("parameters_version", "")),
        )


class TurnStore:
    """Background writes of analysed turns and reads by (user, turn id)."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        ttl_seconds: int,
        max_pending_writes: int,
        warn_every_s: float = 10.0,
    ) -> None:
        self.col = db[TURNS]
        self.ttl_seconds = ttl_seconds
        self.max_pending_writes = max_pending_writes
        self.warn_every_s = warn_every_s
        self._pending: dict[str, Turn] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._last_warning = 0.0
        self.failed_writes = 0
        self.dropped_writes = 0

    def record(self, turn: Turn) -> None:
        """Store ``turn`` in the background (dropped, with a warning, when too many are pending)."""
        if len(self._writes) >= self.max_pending_writes:
            self.dropped_writes += 1
            self._warn("turn write dropped: %d writes pending", len(self._writes))
            return
        key = turn_key(turn.user_id, turn.turn_id)
        self._pending[key] = turn

        async def write() -> None:
            try:
                doc = turn.to_doc()
                await self.col.replace_one({"_id": doc["_id"]}, doc, upsert=True)
            except PyMongoError as exc:
                self.failed_writes += 1
                self._warn("turn write failed: %s", type(exc).__name__)
            finally:
                if self._pending.get(key) is turn:
                    del self._pending[key]

        task = asyncio.get_running_loop().create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def get(self, user_id: str, turn_id: str, timeout: float | None) -> Turn:
        """The stored turn; NOT_FOUND when unknown for this user or expired, UNAVAILABLE on MongoDB trouble."""
        key = turn_key(user_id, turn_id)
        pending = self._pending.get(key)
        if pending is not None:
            return pending
        try:
            async with asyncio.timeout(timeout):
                doc = await self.col.find_one({"_id": key})
        except PyMongoError as exc:
            raise Unavailable(f"mongodb unavailable: {type(exc).__name__}", dependency="mongodb") from exc
        created = doc.get("created_at") if doc is not None else None
        if isinstance(created, datetime) and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        expired = isinstance(created, datetime) and datetime.now(UTC) - created > timedelta(seconds=self.ttl_seconds)
        if doc is None or expired:
            raise NotFound(
                f"turn_id {turn_id!r}: no analysed turn for user {user_id!r} (unknown, or older than "
                f"{self.ttl_seconds} s); send the request_id of an answer given to this user",
                reason="UNKNOWN_TURN",
                field="turn_id",
            )
        return Turn.from_doc(doc)

    def _warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning >= self.warn_every_s:
            self._last_warning = now
            log.warning(msg, *args)

    async def drain(self, timeout: float) -> None:
        """Wait for background writes (on shutdown), cancelling what is left after ``timeout``."""
        if not self._writes:
            return
        _, left = await asyncio.wait(set(self._writes), timeout=timeout)
        for t in left:
            t.cancel()
        for t in left:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
