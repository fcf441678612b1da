"""Stored turns in MongoDB: the controller's decision and the search's reasoning chain per turn.

One document per turn id in ``reasoning_turns``. It is written by DecideThinking (the decision
and the message's learning state) and by Reason (the chain), read back by GetTurnReasoning and,
per session, by the controller as its recent outcomes. Every document carries ``expires_at``:
a TTL index deletes it after expiry, and reads ignore expired documents at once (the TTL
monitor runs only about once a minute, and not every MongoDB-wire server runs one). The chain
is bounded: at most ``max_nodes`` tree nodes (the best path always kept) and ``max_chars`` per
step text.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from pymongo import DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from masterx_runtime.errors import InvalidArgument, Unavailable
from services.reasoning.controller import Decision
from services.reasoning.mcts.tree import Node, SearchResult

COLLECTION = "reasoning_turns"
INDEXES = {
    COLLECTION: [
        IndexModel([("turn_id", 1)], unique=True, name="turn_id"),
        IndexModel([("session_id", 1), ("created_at", DESCENDING)], name="session_recent"),
        IndexModel([("expires_at_date", 1)], expireAfterSeconds=0, name="ttl"),
    ]
}
_TURN_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
MAX_QUERY_CHARS = 8000


def check_turn_id(turn_id: str, field: str = "turn_id") -> None:
    if not _TURN_ID_RE.match(turn_id):
        raise InvalidArgument(
            f"{field} must be 1-128 characters of letters, digits, '_', '.', ':' or '-'",
            reason="BAD_TURN_ID",
            field=field,
        )


def checked_query(query: str, turn_id: str) -> str:
    """The stripped ``query`` of a Reason or DecideThinking request, after checking it and the
    optional ``turn_id`` (InvalidArgument naming the field)."""
    query = query.strip()
    if not query:
        raise InvalidArgument("query is empty", reason="EMPTY_QUERY", field="query")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"query longer than {MAX_QUERY_CHARS} characters", reason="QUERY_TOO_LONG", field="query")
    if turn_id:
        check_turn_id(turn_id)
    return query


def _node_doc(node: Node, max_chars: int) -> tuple[dict[str, Any], bool]:
    text = node.text
    cut = len(text) > max_chars
    return (
        {
            "id": node.index,
            "parent": node.parent.index if node.parent is not None else None,
            "depth": node.depth,
            "strategy": int(node.strategy) if node.strategy is not None else 0,
            "content": text[:max_chars],
            "value": node.value,
            "visits": node.visits,
            "answer": node.answer,
            "reward": node.reward,
            "source": node.source,
            "prior": node.prior,
        },
        cut,
    )


def chain_document(res: SearchResult, *, max_nodes: int, max_chars: int) -> dict[str, Any]:
    """A search result as a bounded, plain document (what is stored and what outcome loops read)."""
    path_ids = [n.index for n in res.path]
    keep = set(path_ids)
    for node in res.nodes[1:]:
        if len(keep) >= max_nodes:
            break
        if node.index not in keep:
            keep.add(node.index)
    tree_nodes = [n for n in res.nodes[1:] if n.index in keep]
    truncated = len(tree_nodes) < len(res.nodes) - 1
    docs = []
    for node in tree_nodes:
        doc, cut = _node_doc(node, max_chars)
        truncated = truncated or cut
        docs.append(doc)
    usage = res.usage
    provider, model = usage.main_provider
    return {
        "answer": res.answer[:max_chars],
        "confidence": res.confidence,
        "stop_reason": res.stop_reason,
        "path": path_ids,
        "nodes": docs,
        "votes": [[k[:200], v] for k, v in list(res.votes.items())[:max_nodes]],  # answers may hold dots
        "iterations": res.iterations,
        "node_count": len(res.nodes) - 1,
        "widenings": res.widenings,
        "merged": res.merged,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": usage.cost_usd,
        "calls": usage.calls,
        "failed_calls": usage.failed_calls,
        "estimated": usage.estimated,
        "provider": provider,
        "model": model,
        "wall_ms": res.wall_ms,
        "truncated": truncated,
    }


def decision_document(decision: Decision) -> dict[str, Any]:
    lim = decision.limits
    return {
        "deep_thinking": decision.deep_thinking,
        "source": str(decision.source),
        "limits": {
            "max_iterations": lim.max_iterations,
            "max_width": lim.max_width,
            "max_widenings": lim.max_widenings,
            "max_wall_ms": lim.max_wall_ms,
        },
        "reasons": [{"code": r.code, "detail": r.detail} for r in decision.reasons],
        "complexity": decision.complexity,
        "score": decision.score,
        "threshold": decision.threshold,
    }


class TurnStore:
    def __init__(
        self,
        db: AsyncDatabase[dict],  # type: ignore[type-arg]
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.coll = db[COLLECTION]
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def _stamp(self) -> dict[str, Any]:
        now = self.clock()
        expires = now + self.ttl_seconds
        return {
            "updated_at": now,
            "expires_at": expires,
            "expires_at_date": dt.datetime.fromtimestamp(expires, tz=dt.UTC),
        }

    async def _upsert(self, turn_id: str, fields: Mapping[str, Any], ident: Mapping[str, Any]) -> None:
        now = self.clock()
        try:
            await self.coll.update_one(
                {"turn_id": turn_id},
                {
                    "$set": {**fields, **self._stamp()},
                    "$setOnInsert": {"created_at": now, **{k: v for k, v in ident.items()}},
                },
                upsert=True,
            )
        except PyMongoError as exc:
            raise Unavailable(f"mongodb unavailable: {exc}", dependency="mongodb") from exc

    async def record_decision(
        self,
        turn_id: str,
        *,
        session_id: str,
        user_id: str,
        learning_state: str,
        decision: Decision,
    ) -> None:
        await self._upsert(
            turn_id,
            {
                "learning_state": learning_state,
                "deep_thinking": decision.deep_thinking,
                "decision": decision_document(decision),
            },
            {"session_id": session_id, "user_id": user_id},
        )

    async def store_chain(self, turn_id: str, *, session_id: str, user_id: str, chain: Mapping[str, Any]) -> None:
        await self._upsert(turn_id, {"result": dict(chain)}, {"session_id": session_id, "user_id": user_id})

    async def get(self, turn_id: str) -> dict[str, Any] | None:
        """The turn's document, or None when unknown or expired."""
        try:
            return await self.coll.find_one({"turn_id": turn_id, "expires_at": {"$gt": self.clock()}}, {"_id": 0})
        except PyMongoError as exc:
            raise Unavailable(f"mongodb unavailable: {exc}", dependency="mongodb") from exc

    async def recent(self, session_id: str, limit: int, *, exclude: str = "") -> list[dict[str, Any]]:
        """The session's latest unexpired turns, newest first (``exclude``: the current turn)."""
        if not session_id or limit <= 0:
            return []
        query: dict[str, Any] = {"session_id": session_id, "expires_at": {"$gt": self.clock()}}
        if exclude:
            query["turn_id"] = {"$ne": exclude}
        try:
            cursor = self.coll.find(query, {"_id": 0}).sort("created_at", DESCENDING).limit(limit)
            return await cursor.to_list(None)
        except PyMongoError as exc:
            raise Unavailable(f"mongodb unavailable: {exc}", dependency="mongodb") from exc
