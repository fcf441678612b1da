"""Liveness, readiness (what chat needs is SERVING; the rest reported as degraded) and Prometheus metrics."""

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


@router.get("/readyz", summary="Readiness: the gateway can serve chat (the router SERVING); the rest is reported")
async def readyz(request: Request) -> JSONResponse:
    """200 while every service in ``GATEWAY_READY_REQUIRES`` (the router) is SERVING.

    The other services and Redis only change ``degraded``: chat answers without emotion,
    reasoning or benchmark scores, and the rate limiter fails open without Redis, so taking the
    gateway out of its load balancer for them would turn a partial outage into a full one.
    """
    cfg = request.app.state.settings
    checks: dict[str, Any] = dict(await request.app.state.peers.health(cfg.ready_timeout_seconds))
    if request.app.state.redis is not None:
        checks["redis"] = await _redis_status(request, cfg.ready_timeout_seconds)
    required = [name for name in cfg.ready_requires if name]
    not_serving = sorted(name for name, status in checks.items() if status != "SERVING")
    blocking = sorted(name for name in required if checks.get(name) != "SERVING")
    body = {
        "status": "not_ready" if blocking else "ready",
        "dependencies": checks,
        "required": required,
        "not_serving": not_serving,
        "blocking": blocking,
        "degraded": [name for name in not_serving if name not in required],
    }
    return JSONResponse(body, status_code=503 if blocking else 200)


@router.get("/metrics", summary="Prometheus metrics of the gateway", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
