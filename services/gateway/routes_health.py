"""Liveness, readiness (every dependency SERVING) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _redis_status(request: Request, timeout: float) -> str:
    redis = request.app.state.redis
    try:
        async with asyncio.timeout(timeout):
            await redis.ping()
    except (RedisError, OSError, TimeoutError):
        return "UNREACHABLE"
    return "SERVING"


@router.get("/readyz", summary="Readiness: every service SERVING (gRPC health) and Redis answering")
async def readyz(request: Request) -> JSONResponse:
    cfg = request.app.state.settings
    checks: dict[str, Any] = dict(await request.app.state.peers.health(cfg.ready_timeout_seconds))
    if request.app.state.redis is not None:
        checks["redis"] = await _redis_status(request, cfg.ready_timeout_seconds)
    not_serving = sorted(name for name, status in checks.items() if status != "SERVING")
    body = {"status": "not_ready" if not_serving else "ready", "dependencies": checks, "not_serving": not_serving}
    return JSONResponse(body, status_code=503 if not_serving else 200)


@router.get("/metrics", summary="Prometheus metrics of the gateway", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
