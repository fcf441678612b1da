"""Stored reasoning of an earlier turn (the reasoning service keeps each turn's search chain)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from masterx.reasoning.v1 import reasoning_pb2
from services.gateway import views
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.errors import GatewayError
from services.gateway.identity import principal_of
from services.gateway.peers import Peers, rpc
from services.gateway.protojson import to_dict

router = APIRouter(prefix="/api/v1/turns", tags=["tutor"])

Cfg = Annotated[GatewaySettings, Depends(get_settings)]
PeersDep = Annotated[Peers, Depends(get_peers)]
TurnId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]


@router.get("/{turn_id}/reasoning", summary="The deep-thinking search of an earlier turn")
async def turn_reasoning(request: Request, turn_id: TurnId, cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    """The turn's thinking decision (with its reasons) and, when a search ran, its answer, best
    path and tree (bounded). The turn id is the chat answer's ``request_id``. 404 when unknown or
    expired (``REASONING_CHAIN_TTL_SECONDS``)."""
    resp = await rpc(
        "reasoning",
        peers.reasoning.GetTurnReasoning(
            reasoning_pb2.GetTurnReasoningRequest(turn_id=turn_id), timeout=cfg.rpc_timeout_seconds
        ),
    )
    principal = principal_of(request)
    if principal is not None and resp.user_id and not principal.may_read(resp.user_id):
        # another student's turn: answered like an unknown one, so ids cannot be probed
        raise GatewayError(404, "NOT_FOUND", f"no stored reasoning for turn {turn_id!r}", service="gateway")
    out: dict[str, Any] = {
        "turn_id": resp.turn_id,
        "session_id": resp.session_id,
        "user_id": resp.user_id,
        "created_at": resp.created_at,
        "expires_at": resp.expires_at,
        "thinking": to_dict(resp.decision) if resp.HasField("decision") else None,
        "reasoning": None,
        "truncated": resp.truncated,
    }
    if resp.has_result:
        out["reasoning"] = views.reasoning(resp.result) | {"tree": [views.step(s) for s in resp.result.tree.nodes]}
    return out
