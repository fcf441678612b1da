"""Practice problems (reasoning service's mastery-aware soroban problem generator)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from masterx.reasoning.v1 import reasoning_pb2
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.errors import bad_request
from services.gateway.identity import student_for
from services.gateway.peers import Peers, rpc
from services.gateway.protojson import from_dict, to_dict
from services.gateway.schemas import (
    PathUserId,
    PracticeExplainRequest,
    PracticePlanRequest,
    PracticeProblemRequest,
    UpdateMasteryIn,
)

router = APIRouter(prefix="/api/v1/practice", tags=["practice"])

Cfg = Annotated[GatewaySettings, Depends(get_settings)]
PeersDep = Annotated[Peers, Depends(get_peers)]
StudentId = PathUserId


@router.post("/plan", summary="Plan a practice session: slots with purpose, part type and bounds")
async def plan(request: Request, req: PracticePlanRequest, cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    req.student_id = student_for(request, req.student_id, field="student_id", write=False)
    if not req.student_id:
        raise bad_request("student_id is required", "student_id", 422)
    msg = from_dict(req.model_dump(), reasoning_pb2.PlanPracticeSessionRequest)
    resp = await rpc("reasoning", peers.reasoning.PlanPracticeSession(msg, timeout=cfg.rpc_timeout_seconds))
    return to_dict(resp)


@router.post("/problem", summary="Generate one problem within the student's complexity budget")
async def problem(request: Request, req: PracticeProblemRequest, cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    req.student_id = student_for(request, req.student_id, field="student_id", write=False)
    msg = from_dict(req.model_dump(exclude_none=True), reasoning_pb2.GenerateProblemRequest)
    resp = await rpc("reasoning", peers.reasoning.GenerateProblem(msg, timeout=cfg.rpc_timeout_seconds))
    return to_dict(resp)


@router.post("/explain", summary="Explain a generation trace in plain language")
async def explain(req: PracticeExplainRequest, cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    try:
        trace = from_dict(req.trace, reasoning_pb2.GenerationTrace)
    except ValueError as exc:
        raise bad_request(f"trace: {exc}", "trace", 422) from None
    resp = await rpc(
        "reasoning",
        peers.reasoning.ExplainTrace(reasoning_pb2.ExplainTraceRequest(trace=trace), timeout=cfg.rpc_timeout_seconds),
    )
    return to_dict(resp)


@router.get("/students/{student_id}/mastery", summary="A student's stored skill mastery")
async def get_mastery(request: Request, student_id: StudentId, cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    student_id = student_for(request, student_id, field="student_id", write=False)
    resp = await rpc(
        "reasoning",
        peers.reasoning.GetMastery(
            reasoning_pb2.GetMasteryRequest(student_id=student_id), timeout=cfg.rpc_timeout_seconds
        ),
    )
    return to_dict(resp)


@router.put("/students/{student_id}/mastery", summary="Set a student's mastery of skills")
async def put_mastery(
    request: Request, student_id: StudentId, req: UpdateMasteryIn, cfg: Cfg, peers: PeersDep
) -> dict[str, Any]:
    student_id = student_for(request, student_id, field="student_id", write=True)
    msg = reasoning_pb2.UpdateMasteryRequest(
        student_id=student_id,
        skills=[reasoning_pb2.SkillMastery(**s.model_dump()) for s in req.skills],
    )
    resp = await rpc("reasoning", peers.reasoning.UpdateMastery(msg, timeout=cfg.rpc_timeout_seconds))
    return to_dict(resp)
