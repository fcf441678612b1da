"""Read-only views: benchmark leaderboards, provider health, and (admin) the cost ledger."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from masterx.benchmark.v1 import benchmark_pb2
from masterx.router.v1 import router_pb2
from services.gateway.auth import require_admin
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.errors import bad_request
from services.gateway.peers import Peers, rpc
from services.gateway.protojson import to_dict
from services.gateway.schemas import CategoryName
from services.gateway.views import category_value

router = APIRouter(prefix="/api/v1", tags=["operations"])

Cfg = Annotated[GatewaySettings, Depends(get_settings)]
PeersDep = Annotated[Peers, Depends(get_peers)]

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@router.get("/benchmarks", summary="Latest benchmark leaderboards (one category or all)")
async def benchmarks(
    cfg: Cfg,
    peers: PeersDep,
    category: Annotated[CategoryName | None, Query(description="One category; omitted = every category.")] = None,
    max_age_seconds: Annotated[
        int, Query(ge=0, le=315_360_000, description="Ignore older scores (0 = service default; at most 10 years).")
    ] = 0,
) -> dict[str, Any]:
    if category is not None:
        board = await rpc(
            "benchmark",
            peers.benchmark.GetLeaderboard(
                benchmark_pb2.GetLeaderboardRequest(category=category_value(category), max_age_seconds=max_age_seconds),
                timeout=cfg.rpc_timeout_seconds,
            ),
        )
        return {"leaderboards": [to_dict(board)]}
    scores = await rpc(
        "benchmark",
        peers.benchmark.GetScores(
            benchmark_pb2.GetScoresRequest(max_age_seconds=max_age_seconds), timeout=cfg.rpc_timeout_seconds
        ),
    )
    return to_dict(scores)


@router.get("/benchmarks/suites", summary="Benchmark suites with versions, item counts and weights")
async def suites(cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    resp = await rpc(
        "benchmark", peers.benchmark.ListSuites(benchmark_pb2.ListSuitesRequest(), timeout=cfg.rpc_timeout_seconds)
    )
    return to_dict(resp)


@router.get("/provider-health", summary="Providers with circuit-breaker state, failure rate and prices")
async def provider_health(cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    resp = await rpc(
        "router", peers.router.ListProviders(router_pb2.ListProvidersRequest(), timeout=cfg.rpc_timeout_seconds)
    )
    providers = to_dict(resp)["providers"]
    return {
        "providers": providers,
        "healthy": sum(1 for p in providers if p["breaker_state"] == "closed"),
        "total": len(providers),
    }


@router.get(
    "/costs",
    summary="Cost ledger by day, user and provider (admin)",
    dependencies=[Depends(require_admin)],
)
async def costs(
    cfg: Cfg,
    peers: PeersDep,
    user_id: Annotated[str, Query(max_length=128, description="One student (the shared user id rule).")] = "",
    provider: Annotated[str, Query(max_length=64)] = "",
    since: Annotated[str, Query(description="First day YYYY-MM-DD (default 30 days ago).")] = "",
    until: Annotated[str, Query(description="Last day YYYY-MM-DD (default today).")] = "",
) -> dict[str, Any]:
    for name, value in (("since", since), ("until", until)):
        if value and not _DAY.match(value):
            raise bad_request(f"{name} must be a day as YYYY-MM-DD", name)
    resp = await rpc(
        "router",
        peers.router.GetCosts(
            router_pb2.GetCostsRequest(user_id=user_id, provider=provider, since_day=since, until_day=until),
            timeout=cfg.rpc_timeout_seconds,
        ),
    )
    return to_dict(resp)
