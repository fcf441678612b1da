"""Admin API keys: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, compared in constant time."""

from __future__ import annotations

import hmac
import logging

from fastapi import Request

from services.gateway.errors import GatewayError

log = logging.getLogger("masterx.gateway.auth")


def presented_key(request: Request) -> str:
    """The key a request carries ("" when none)."""
    if key := request.headers.get("x-api-key", ""):
        return key.strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def key_matches(presented: str, keys: tuple[str, ...]) -> bool:
    """True when ``presented`` equals one of ``keys``; every key is compared, so timing says nothing."""
    given = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


async def require_admin(request: Request) -> None:
    """FastAPI dependency guarding the admin endpoints."""
    keys: tuple[str, ...] = request.app.state.settings.admin_api_keys
    if not keys:
        raise GatewayError(
            403,
            "PERMISSION_DENIED",
            "admin API disabled: no keys configured (set GATEWAY_ADMIN_API_KEYS)",
            service="gateway",
        )
    presented = presented_key(request)
    if not presented or not key_matches(presented, keys):
        log.warning("admin key rejected", extra={"route": request.url.path, "key_given": bool(presented)})
        raise GatewayError(
            401,
            "UNAUTHENTICATED",
            "admin API key missing or invalid (send `Authorization: Bearer KEY` or `X-API-Key: KEY`)",
            service="gateway",
            headers={"WWW-Authenticate": 'Bearer realm="masterx-admin"'},
        )
