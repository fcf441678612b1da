"""Outcomes of tutor turns (the emotion service's RecordOutcome): the input of the refit loop."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.errors import bad_request
from services.gateway.identity import student_for
from services.gateway.peers import Peers, rpc
from services.gateway.schemas import OutcomeRequest

router = APIRouter(prefix="/api/v1", tags=["tutor"])

Cfg = Annotated[GatewaySettings, Depends(get_settings)]
PeersDep = Annotated[Peers, Depends(get_peers)]

#: The one-click answer to "did this help?" as an outcome of the turn's intervention.
HELPED_OUTCOME = {True: "improved", False: "no_change"}


def outcome_request(req: OutcomeRequest) -> emotion_pb2.RecordOutcomeRequest:
    """RecordOutcomeRequest of a validated body (exactly one of helped / outcome)."""
    if (req.helped is None) == (req.outcome is None):
        raise bad_request("send exactly one of `helped` (true/false) or `outcome`", "helped", 422)
    name = req.outcome if req.outcome is not None else HELPED_OUTCOME[bool(req.helped)]
    msg = emotion_pb2.RecordOutcomeRequest(
        user_id=req.user_id,
        session_id=req.session_id,
        turn_id=req.turn_id,
        outcome=emotion_pb2.OutcomeKind.Value(f"OUTCOME_KIND_{name.upper()}"),
    )
    if req.observed_state is not None:
        msg.observed_state = common_pb2.LearningState.Value(f"LEARNING_STATE_{req.observed_state.upper()}")
    return msg


@router.post("/outcomes", status_code=201, summary="Record whether a tutor turn helped (emotion RecordOutcome)")
async def record_outcome(request: Request, req: OutcomeRequest, cfg: Cfg, peers: PeersDep) -> JSONResponse:
    """Store the outcome of turn ``turn_id`` (the ``request_id`` of a chat or emotion answer made
    with this ``user_id``). The turn's stored analysis is the evidence the refit learns from.
    An unknown turn is 404 and bad values are 4xx; nothing is stored then."""
    req.user_id = student_for(request, req.user_id, write=True)
    if not req.user_id:
        raise bad_request("user_id is required", "user_id", 422)
    msg = outcome_request(req)
    resp = await rpc("emotion", peers.emotion.RecordOutcome(msg, timeout=cfg.rpc_timeout_seconds))
    outcome = emotion_pb2.OutcomeKind.Name(msg.outcome).removeprefix("OUTCOME_KIND_").lower()
    return JSONResponse(
        {"outcome_id": resp.outcome_id, "turn_id": req.turn_id, "user_id": req.user_id, "outcome": outcome},
        status_code=201,
    )
