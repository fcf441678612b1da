"""POST /api/v1/route: what the router would choose for a message (dry run, no provider call)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.peers import Peers, rpc
from services.gateway.protojson import to_dict
from services.gateway.schemas import CategoryName, HistoryMessage
from services.gateway.views import category_value

router = APIRouter(prefix="/api/v1", tags=["routing"])

Cfg = Annotated[GatewaySettings, Depends(get_settings)]
PeersDep = Annotated[Peers, Depends(get_peers)]


class RouteRequest(BaseModel):
    """A message to route; nothing is generated and no session is changed."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"message": "Prove that sqrt(2) is irrational", "complexity": 0.8}]},
    )

    message: str = Field(..., min_length=1, description="The student's message.")
    history: list[HistoryMessage] = Field(default_factory=list, description="Earlier messages, oldest first.")
    session_id: str = Field("", max_length=128, description="Session whose topic, provider and escalation count.")
    category: CategoryName | None = Field(None, description="Category hint; omitted = the router decides.")
    cost_quality: float | None = Field(None, ge=0, le=1, description="0 = cheapest acceptable, 1 = best.")
    complexity: float | None = Field(None, ge=0, le=1, description="Difficulty in [0, 1]; omitted = estimated.")
    provider: str = Field("", max_length=64, description="Pin one provider.")


@router.post("/route", summary="Dry-run routing: ranked candidates, scores, sources, complexity and reasons")
async def route(req: RouteRequest, cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    messages = [common_pb2.ChatMessage(role=m.role, content=m.content) for m in req.history]
    messages.append(common_pb2.ChatMessage(role="user", content=req.message))
    request = router_pb2.GenerateRequest(
        messages=messages,
        session_id=req.session_id,
        category=category_value(req.category),
        pinned_provider=req.provider,
        purpose=router_pb2.PURPOSE_CHAT,
    )
    if req.cost_quality is not None:
        request.cost_quality = req.cost_quality
    if req.complexity is not None:
        request.budget.complexity = req.complexity
    decision = await rpc("router", peers.router.Route(request, timeout=cfg.rpc_timeout_seconds))
    return to_dict(decision)
