"""Chat sessions in Redis (one JSON value per session, with a TTL) and topic-change detection.

A session remembers which provider serves it and what the topic is, so the router can keep
the same provider while the topic holds (continuity) and re-route when it changes. The topic
is the classifier's category plus a running average of its category distribution; a message
changes the topic only when the classifier is confident about a different category AND the
message's distribution is far (cosine) from the session's; and the classifier has a trained
"follow-up" class, so continuations ("why?", "can you say more?", "next one") keep the topic.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis


@dataclass
class SessionState:
    session_id: str
    provider: str = ""
    category: str = ""
    topic_vector: list[float] = field(default_factory=list)
    provider_history: list[str] = field(default_factory=list)
    topic_history: list[str] = field(default_factory=list)
    turns: int = 0
    updated_at: float = 0.0
    #: Distress (policy.yaml ``escalation.distress_weights``) of the last turns, oldest first.
    distress: list[float] = field(default_factory=list)
    #: True while the session is escalated to a higher-quality provider.
    escalated: bool = False

    @property
    def is_new(self) -> bool:
        return self.turns == 0


@dataclass(frozen=True)
class TopicVerdict:
    changed: bool
    category: str
    reason: str
    followup: bool = False


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def judge_topic(
    session: SessionState,
    category: str,
    confidence: float,
    probabilities: Sequence[float],
    *,
    min_confidence: float,
    similarity_threshold: float,
    followup: float = 0.0,
    followup_keep: float = 0.5,
) -> TopicVerdict:
    """Does this message continue the session's topic or start a new one?

    Rule: a follow-up (``followup >= followup_keep``) keeps the topic; so does the same
    category, a category the model is less than ``min_confidence`` sure of, or a message whose
    category distribution is cosine-similar (``>= similarity_threshold``) to the session's
    running distribution. Anything else changes the topic (and re-routes).
    """
    if not session.category:
        return TopicVerdict(False, category, f"first topic: {category}")
    if followup >= followup_keep:
        return TopicVerdict(False, session.category, f"topic holds: follow-up message ({followup:.2f})", followup=True)
    if category == session.category:
        return TopicVerdict(False, session.category, f"topic holds ({category})")
    if confidence < min_confidence:
        return TopicVerdict(
            False, session.category, f"topic holds: {category} only {confidence:.2f} < {min_confidence:.2f} sure"
        )
    similarity = cosine(probabilities, session.topic_vector) if session.topic_vector else 0.0
    if similarity >= similarity_threshold:
        return TopicVerdict(
            False, session.category, f"topic holds: similarity {similarity:.2f} >= {similarity_threshold:.2f}"
        )
    return TopicVerdict(True, category, f"topic changed {session.category} -> {category} (similarity {similarity:.2f})")


def advance(
    session: SessionState,
    verdict: TopicVerdict,
    probabilities: Sequence[float],
    provider: str,
    *,
    history_limit: int,
    ema: float = 0.7,
    distress: float | None = None,
    escalated: bool = False,
    distress_window: int = 10,
    now: float | None = None,
) -> SessionState:
    """The session after a turn answered by ``provider`` (histories record changes only)."""
    probs = [float(p) for p in probabilities]
    if verdict.followup and session.topic_vector:
        vector = list(session.topic_vector)
    elif verdict.changed or not session.topic_vector:
        vector = probs
    else:
        vector = [ema * old + (1 - ema) * new for old, new in zip(session.topic_vector, probs, strict=True)]
    topics = list(session.topic_history)
    if not topics or topics[-1] != verdict.category:
        topics.append(verdict.category)
    providers = list(session.provider_history)
    if not providers or providers[-1] != provider:
        providers.append(provider)
    return SessionState(
        session_id=session.session_id,
        provider=provider,
        category=verdict.category,
        topic_vector=vector,
        provider_history=providers[-history_limit:],
        topic_history=topics[-history_limit:],
        turns=session.turns + 1,
        updated_at=time.time() if now is None else now,
        distress=(list(session.distress) + ([distress] if distress is not None else []))[-distress_window:],
        escalated=escalated,
    )


class SessionStore:
    """Sessions under ``{prefix}router:session:{id}``; every write renews the TTL."""

    def __init__(self, redis: aioredis.Redis, *, key_prefix: str = "masterx:", ttl_seconds: int = 3600) -> None:
        self.redis = redis
        self.prefix = f"{key_prefix}router:session:"
        self.ttl_seconds = ttl_seconds

    def key(self, session_id: str) -> str:
        return self.prefix + session_id

    @staticmethod
    def decode(session_id: str, raw: bytes | str | None) -> SessionState:
        if raw is None:
            return SessionState(session_id)
        data = json.loads(raw)
        data["session_id"] = session_id
        known = SessionState.__dataclass_fields__
        return SessionState(**{k: v for k, v in data.items() if k in known})

    async def load(self, session_id: str) -> SessionState:
        """The session, or a fresh one (turns == 0) when it does not exist or expired."""
        return self.decode(session_id, await self.redis.get(self.key(session_id)))

    async def load_with_ttl(self, session_id: str) -> tuple[SessionState | None, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.key(session_id))
        pipe.ttl(self.key(session_id))
        raw, ttl = await pipe.execute()
        if raw is None:
            return None, 0
        return self.decode(session_id, raw), max(int(ttl), 0)

    async def save(self, session: SessionState) -> None:
        payload = asdict(session)
        payload.pop("session_id")
        await self.redis.set(
            self.key(session.session_id), json.dumps(payload, separators=(",", ":")), ex=self.ttl_seconds
        )
