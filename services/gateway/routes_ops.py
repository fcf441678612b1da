"""The operators' page (``/ops``) and the admin JSON behind it.

``GET /ops`` serves the page (static HTML/JS/CSS under ``static/ops*``; it asks for the admin
key and keeps it in sessionStorage). Everything it shows comes from
``GET /api/v1/ops/overview`` (admin key): the router's per-category ranking with each score's
source and age, every provider's breaker state now and sampled over time, spend per day and
provider with the daily budgets, recent benchmark runs, and the last routing decisions this
gateway saw. Each section is fetched on its own, so a service that is down blanks only its
section (``{"error": ...}``). ``POST /api/v1/ops/benchmark-runs`` starts a run the page follows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse, JSONResponse

from masterx.benchmark.v1 import benchmark_pb2
from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2
from masterx_runtime import tracing
from masterx_runtime.tasks import stop_tasks, wait_event
from services.gateway import opsdata
from services.gateway.auth import require_admin
from services.gateway.config import GatewaySettings
from services.gateway.deps import get_peers, get_settings
from services.gateway.errors import GatewayError
from services.gateway.peers import Peers, rpc
from services.gateway.protojson import to_dict
from services.gateway.routes_admin import run_accepted, start_benchmark_run
from services.gateway.schemas import RunBenchmarksRequest
from services.gateway.views import category_value

log = logging.getLogger("masterx.gateway.ops")

STATIC_DIR = Path(__file__).parent / "static"
#: Categories the board shows, in the enum's order (unspecified left out).
CATEGORIES = tuple(
    v.name.removeprefix("CATEGORY_").lower()
    for v in common_pb2.Category.DESCRIPTOR.values
    if v.number != common_pb2.CATEGORY_UNSPECIFIED
)
#: A message the router can rank for every category (Route only decides; nothing is generated).
_PROBE = "ops page: rank the providers for this category"
#: Runs kept in the list (started from the page, or behind a leaderboard score).
RUNS_SHOWN = 8

page = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/v1/ops", tags=["operations"], dependencies=[Depends(require_admin)])

Cfg = Annotated[GatewaySettings, Depends(get_settings)]
PeersDep = Annotated[Peers, Depends(get_peers)]


class OpsState:
    """The gateway's memory for the page: breaker samples and the runs it started."""

    def __init__(self, cfg: GatewaySettings) -> None:
        self.cfg = cfg
        self.history = opsdata.ProviderHistory(cfg.ops_history_samples)
        self.runs: deque[str] = deque(maxlen=RUNS_SHOWN)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        opsdata.DECISIONS.resize(cfg.ops_recent_decisions)

    def start(self, peers: Peers) -> None:
        """Sample provider health in the background (only when the page can be used at all)."""
        if self.cfg.ops_sample_seconds > 0 and self.cfg.admin_api_keys and self._task is None:
            self._task = asyncio.create_task(self._sample_loop(peers), name="ops-sampler")

    async def stop(self) -> None:
        self._stop.set()
        await stop_tasks([self._task])

    async def sample(self, peers: Peers) -> list[dict[str, Any]]:
        resp = await peers.router.ListProviders(
            router_pb2.ListProvidersRequest(), timeout=self.cfg.ready_timeout_seconds
        )
        providers: list[dict[str, Any]] = to_dict(resp)["providers"]
        self.history.record(time.time(), providers)
        return providers

    async def _sample_loop(self, peers: Peers) -> None:
        while not self._stop.is_set():
            try:
                with tracing.untraced():  # a poll every few seconds would bury the real traces
                    await self.sample(peers)
            except grpc.aio.AioRpcError as exc:
                log.debug("provider sample failed", extra={"code": exc.code().name})
            await wait_event(self._stop, self.cfg.ops_sample_seconds)


def _state(app_state: Any) -> OpsState:
    ops: OpsState | None = getattr(app_state, "ops", None)
    if ops is None:  # an app built without the lifespan (tests): keep one anyway
        ops = app_state.ops = OpsState(app_state.settings)
    return ops


async def _section(name: str, make: Callable[[], Awaitable[Any]]) -> Any:
    """One section of the overview; a failing service blanks only its own section."""
    try:
        return await make()
    except GatewayError as err:
        return {"error": {"service": err.service or name, "status": err.status, "message": err.message}}
    except grpc.aio.AioRpcError as exc:
        return {"error": {"service": name, "status": 503, "message": exc.details() or exc.code().name}}


@page.get("/ops")
async def ops_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "ops.html", headers={"Cache-Control": "no-cache"})


@api.get("/overview", summary="Everything the ops page shows, in one document (admin)")
async def overview(request: Request, cfg: Cfg, peers: PeersDep) -> dict[str, Any]:
    ops = _state(request.app.state)
    now = time.time()
    with tracing.untraced():  # the open page polls this every few seconds: not traced
        scores = await _section("benchmark", lambda: _scores(cfg, peers))
        boards, providers, runs = await asyncio.gather(
            _section("router", lambda: _leaderboards(cfg, peers, scores, now)),
            _section("router", lambda: _providers(ops, peers)),
            _section("benchmark", lambda: _runs(ops, cfg, peers, scores)),
        )
        costs = await _section("router", lambda: _costs(cfg, peers, providers))
    return {
        "generated_at": round(now, 3),
        "sample_seconds": cfg.ops_sample_seconds,
        "leaderboards": boards,
        "providers": providers,
        "costs": costs,
        "runs": runs,
        "decisions": opsdata.DECISIONS.newest_first(),
    }


@api.post("/benchmark-runs", status_code=202, summary="Start a benchmark run from the ops page (admin)")
async def start_run(
    request: Request, cfg: Cfg, peers: PeersDep, req: Annotated[RunBenchmarksRequest | None, Body()] = None
) -> JSONResponse:
    """Like ``/api/v1/admin/run-benchmarks`` (trigger ``ops``); the run then shows in the overview."""
    req = req or RunBenchmarksRequest.model_validate({})
    status = await start_benchmark_run(cfg, peers, req, trigger="ops")
    _state(request.app.state).runs.append(status.run_id)
    return run_accepted(status)


async def _providers(ops: OpsState, peers: Peers) -> list[dict[str, Any]]:
    current = await ops.sample(peers)
    return [{**p, "history": ops.history.of(p["name"])} for p in current]


async def _scores(cfg: GatewaySettings, peers: Peers) -> dict[str, Any]:
    resp = await rpc(
        "benchmark", peers.benchmark.GetScores(benchmark_pb2.GetScoresRequest(), timeout=cfg.rpc_timeout_seconds)
    )
    return to_dict(resp)


def _weights(obj: dict[str, Any]) -> dict[str, float]:
    return {k: float(obj.get(f"{k}_weight", 0.0)) for k in ("quality", "speed", "cost")}


async def _leaderboards(cfg: GatewaySettings, peers: Peers, scores: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """Per category: the router's ranking (Route, which only decides) joined with the measurements."""
    measured: dict[str, list[dict[str, Any]]] = {}
    weights: dict[str, dict[str, float]] = {}
    for suite in scores.get("suites", []):
        weights[suite.get("category", "")] = _weights(suite)
    for board in scores.get("leaderboards", []):
        measured[board["category"]] = board.get("scores", [])
        if "quality_weight" in board:
            weights[board["category"]] = _weights(board)
    decisions = await asyncio.gather(
        *(
            rpc(
                "router",
                peers.router.Route(
                    router_pb2.GenerateRequest(
                        messages=[common_pb2.ChatMessage(role="user", content=_PROBE)],
                        category=category_value(cat),
                    ),
                    timeout=cfg.rpc_timeout_seconds,
                ),
            )
            for cat in CATEGORIES
        ),
        return_exceptions=True,
    )
    out = []
    for cat, decision in zip(CATEGORIES, decisions, strict=True):
        if isinstance(decision, GatewayError):
            out.append({"category": cat, "error": {"service": "router", "message": decision.message}, "rows": []})
        elif isinstance(decision, BaseException):
            raise decision
        else:
            candidates = to_dict(decision).get("candidates", [])
            out.append(opsdata.leaderboard(cat, candidates, measured.get(cat, []), weights.get(cat, {}), now))
    return out


async def _costs(cfg: GatewaySettings, peers: Peers, providers: Any) -> dict[str, Any]:
    days = opsdata.day_range(dt.datetime.now(dt.UTC).date(), cfg.ops_cost_days)
    resp = await rpc(
        "router",
        peers.router.GetCosts(
            router_pb2.GetCostsRequest(since_day=days[0], until_day=days[-1]), timeout=cfg.rpc_timeout_seconds
        ),
    )
    budgets = (
        {p["name"]: float(p.get("daily_budget_usd", 0.0)) for p in providers} if isinstance(providers, list) else {}
    )
    return opsdata.spend(to_dict(resp).get("rows", []), days, budgets)


async def _runs(ops: OpsState, cfg: GatewaySettings, peers: Peers, scores: Any) -> list[dict[str, Any]]:
    """Runs started from the page plus the runs behind the current scores, newest first."""
    ids = list(dict.fromkeys(reversed(ops.runs)))
    if isinstance(scores, dict):
        for board in scores.get("leaderboards", []):
            for score in board.get("scores", []):
                if score.get("run_id") and score["run_id"] not in ids:
                    ids.append(score["run_id"])
    statuses = await asyncio.gather(
        *(
            peers.benchmark.GetRun(benchmark_pb2.GetRunRequest(run_id=i), timeout=cfg.rpc_timeout_seconds)
            for i in ids[: RUNS_SHOWN * 2]
        ),
        return_exceptions=True,
    )
    found = [to_dict(st) for st in statuses if not isinstance(st, BaseException)]
    return opsdata.recent_runs(found, RUNS_SHOWN)
