"""The gateway's ASGI app: routes, middleware, error handlers, static tutor page, lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from masterx_runtime.config import load
from masterx_runtime.logs import request_id_var
from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.redis_store import RedisSettings
from masterx_runtime.topology import GRPC_SERVICES
from services.gateway import (
    docs_offline,
    routes_admin,
    routes_chat,
    routes_health,
    routes_info,
    routes_openai,
    routes_ops,
    routes_outcomes,
    routes_practice,
    routes_route,
    routes_turns,
)
from services.gateway.config import GatewaySettings
from services.gateway.errors import GatewayError, http_row
from services.gateway.identity import AuthMiddleware, TokenVerifier
from services.gateway.middleware import BodyLimitMiddleware, RateLimitMiddleware, RequestContextMiddleware
from services.gateway.peers import Peers
from services.gateway.ratelimit import RateLimiter
from services.gateway.telemetry import instrument as instrument_tracing

log = logging.getLogger("masterx.gateway")

STATIC_DIR = Path(__file__).parent / "static"


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    """(status, message, field) for a pydantic failure: 400 for malformed JSON, 422 otherwise."""
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            pos = err.get("loc", ("body", "?"))[-1]
            return 400, f"malformed JSON body: {reason} (at character {pos})", "body"
    for err in errors:
        if tuple(err.get("loc", ())) == ("body",) and err.get("type") in ("model_attributes_type", "dict_type"):
            if isinstance(err.get("input"), bytes | str):
                return 400, "request body must be JSON (send Content-Type: application/json)", "body"
            given = "null" if err.get("input") is None else type(err.get("input")).__name__
            return 400, f"request body must be a JSON object, not {given}", "body"
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    first = errors[0] if errors else {}
    field = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "; ".join(parts) + more, field


def _error_response(err: GatewayError) -> JSONResponse:
    return JSONResponse(err.body(request_id_var.get()), status_code=err.status, headers=err.headers or None)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("upstream error", extra={"status": exc.status, "code": exc.code, "failed": exc.service})
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, field = _validation_message(exc)
        return _error_response(GatewayError(status, "INVALID_ARGUMENT", message, service="gateway", field=field))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = http_row(exc.status_code).code
        err = GatewayError(exc.status_code, code, str(exc.detail), service="gateway", headers=dict(exc.headers or {}))
        return _error_response(err)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        rid = request_id_var.get()
        return _error_response(GatewayError(500, "INTERNAL", f"internal error; request id {rid}", service="gateway"))


def create_app(
    settings: GatewaySettings | None = None,
    peer_settings: PeerSettings | None = None,
    redis_settings: RedisSettings | None = None,
) -> FastAPI:
    """Build the gateway. Settings default to the environment."""
    cfg = settings or load(GatewaySettings)
    peer_cfg = peer_settings or load(PeerSettings)
    redis_cfg = redis_settings or load(RedisSettings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.peers = Peers.connect(peer_cfg)
        app.state.ops = routes_ops.OpsState(cfg)
        app.state.ops.start(app.state.peers)
        log.info(
            "gateway ready",
            extra={
                **{s.name: peer_cfg.addr(s.name) for s in GRPC_SERVICES},
                "rate_limit_per_minute": cfg.rate_limit_per_minute,
                "admin_keys": len(cfg.admin_api_keys),
            },
        )
        try:
            yield
        finally:
            await app.state.ops.stop()
            await app.state.peers.close()
            if app.state.redis is not None:
                await app.state.redis.aclose()

    app = FastAPI(
        title="MasterX gateway",
        version="1.0",
        summary="Emotion-aware AI tutoring: chat, emotion analysis, provider routing and benchmarks over HTTP.",
        lifespan=lifespan,
        docs_url=None,  # served by docs_offline from installed assets, not from a CDN
        redoc_url=None,
    )
    docs_offline.install(app)
    app.state.settings = cfg
    app.state.peers = None
    # The Redis client connects lazily, on the loop of the first request.
    app.state.redis = None
    limiter: RateLimiter | None = None
    if cfg.rate_limit_per_minute > 0:
        app.state.redis = aioredis.Redis.from_url(
            redis_cfg.url,
            socket_timeout=redis_cfg.socket_timeout_seconds,
            socket_connect_timeout=redis_cfg.connect_timeout_seconds,
            max_connections=redis_cfg.max_connections,
        )
        limiter = RateLimiter(app.state.redis, cfg.rate_limit_per_minute, cfg.rate_limit_burst, redis_cfg.key_prefix)
    _install_error_handlers(app)
    for module in (
        routes_chat,
        routes_outcomes,
        routes_openai,
        routes_info,
        routes_admin,
        routes_practice,
        routes_route,
        routes_turns,
        routes_health,
    ):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(routes_ops.page)
    app.include_router(routes_ops.api)
    instrument_tracing(app)

    # Added innermost first: the request-context middleware ends up outermost.
    if cfg.auth_mode == "jwt":  # inside the rate limit: floods of bad tokens are limited too
        app.add_middleware(AuthMiddleware, verifier=TokenVerifier(cfg))
    if limiter is not None:
        app.add_middleware(
            RateLimitMiddleware,
            limiter=limiter,
            fail_open=cfg.rate_limit_fail_open,
            trusted_proxies=cfg.trusted_proxies,
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    if cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.cors_origins),
            allow_methods=["GET", "POST", "PUT", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"],
        )
    app.add_middleware(RequestContextMiddleware)
    return app
