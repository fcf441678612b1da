"""Admin endpoints (API key required): start, watch and cancel benchmark runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import JSONResponse

from masterx.benchmark.v1 import benchmark_pb2
from services.gateway.auth import require_admin
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.peers import Peers, rpc
from services.gateway.protojson import to_dict
from services.gateway.schemas import RunBenchmarksRequest
from services.gateway.views import category_value

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])

Cfg = Annotated[GatewaySettings, Depends(get_settings)]
PeersDep = Annotated[Peers, Depends(get_peers)]
RunId = Annotated[str, Path(min_length=1, max_length=128)]


@router.post("/run-benchmarks", status_code=202, summary="Start a benchmark run now")
async def run_benchmarks(cfg: Cfg, peers: PeersDep, req: Annotated[RunBenchmarksRequest, Body()]) -> JSONResponse:
    """Returns at once (202) with the run id; follow it at ``/api/v1/admin/benchmark-runs/{run_id}``.

    The body is required: ``{}`` runs every suite on every provider; a missing or ``null`` body is
    an error (it used to start everything)."""
    return run_accepted(await start_benchmark_run(cfg, peers, req, trigger="admin"))


async def start_benchmark_run(
    cfg: GatewaySettings, peers: Peers, req: RunBenchmarksRequest, *, trigger: str
) -> benchmark_pb2.RunStatus:
    """Asks the benchmark service to start a run of ``req`` (``trigger`` names who asked)."""
    return await rpc(
        "benchmark",
        peers.benchmark.StartRun(
            benchmark_pb2.StartRunRequest(
                categories=[category_value(c) for c in req.categories],
                providers=req.providers,
                trigger=trigger,
                max_items_per_suite=req.max_items_per_suite,
            ),
            timeout=cfg.rpc_timeout_seconds,
        ),
    )


def run_accepted(status: benchmark_pb2.RunStatus) -> JSONResponse:
    """202 with the run's status, and where to follow it."""
    return JSONResponse(
        to_dict(status), status_code=202, headers={"Location": f"/api/v1/admin/benchmark-runs/{status.run_id}"}
    )


@router.get("/benchmark-runs/{run_id}", summary="Status of a benchmark run")
async def get_run(run_id: RunId, cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    status = await rpc(
        "benchmark", peers.benchmark.GetRun(benchmark_pb2.GetRunRequest(run_id=run_id), timeout=cfg.rpc_timeout_seconds)
    )
    return to_dict(status)


@router.get("/benchmark-runs/{run_id}/items", summary="Per-item results of a run, with evidence")
async def run_items(
    run_id: RunId, cfg: Cfg, peers: PeersDep, provider: Annotated[str, Query(max_length=64)] = ""
) -> dict[str, Any]:
    resp = await rpc(
        "benchmark",
        peers.benchmark.ListItemResults(
            benchmark_pb2.ListItemResultsRequest(run_id=run_id, provider=provider), timeout=cfg.rpc_timeout_seconds
        ),
    )
    return to_dict(resp)


@router.post("/benchmark-runs/{run_id}/cancel", summary="Cancel a running benchmark run")
async def cancel_run(run_id: RunId, cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    status = await rpc(
        "benchmark",
        peers.benchmark.CancelRun(benchmark_pb2.CancelRunRequest(run_id=run_id), timeout=cfg.rpc_timeout_seconds),
    )
    return to_dict(status)
