"""ASGI middleware: request ids and access logs, body size limit, per-client rate limit.

Written as plain ASGI (no BaseHTTPMiddleware) so streaming responses pass straight through
and the per-request cost stays in the microseconds.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence

from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from masterx_runtime.logs import request_id_var
from services.gateway.errors import GatewayError
from services.gateway.ratelimit import RateLimiter

log = logging.getLogger("masterx.gateway.http")

HTTP_REQUESTS = Counter("masterx_gateway_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "masterx_gateway_request_seconds",
    "HTTP request latency until the response is complete (streams included)",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


async def send_error(send: Send, err: GatewayError, extra_headers: dict[str, str] | None = None) -> None:
    """Send ``err`` as the JSON error body from raw ASGI code."""
    body = json.dumps(err.body(request_id_var.get())).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for key, value in {**err.headers, **(extra_headers or {})}.items():
        headers.append((key.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Take ``X-Request-ID`` (or make one), echo it, log one access line, record metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _REQUEST_ID_OK.match(candidate) else ""
                break
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or ("static" if scope["path"] != "/" else "/")
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_LATENCY.labels(route).observe(seconds)
            quiet = route in ("/healthz", "/readyz", "/metrics", "static")
            log.log(
                logging.DEBUG if quiet else logging.INFO,
                "http",
                extra={"method": scope["method"], "route": route, "status": status, "ms": round(seconds * 1000, 2)},
            )
            request_id_var.reset(token)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (FastAPI re-raises HTTPException)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {max_bytes} bytes")


class BodyLimitMiddleware:
    """413 for bodies over the limit: by Content-Length up front, else while reading chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> GatewayError:
        return GatewayError(
            413,
            "PAYLOAD_TOO_LARGE",
            f"request body is larger than the limit of {self.max_bytes} bytes",
            service="gateway",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await send_error(send, self._error(), {"connection": "close"})
                    return
                break
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_error(send, self._error(), {"connection": "close"})


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """``GATEWAY_TRUSTED_PROXIES`` entries as networks (a bare address is a /32 or /128); ValueError names a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR range: {entry!r}") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a forwarded hop ("1.2.3.4", "1.2.3.4:5678", "[::1]:80", "::1"); None if it is not one."""
    hop = text.strip()
    if hop.startswith("["):
        hop = hop[1:].split("]", 1)[0]
    elif hop.count(":") == 1:
        hop = hop.split(":", 1)[0]
    try:
        return ipaddress.ip_address(hop)
    except ValueError:
        return None


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None, trusted: tuple[Network, ...]) -> bool:
    return addr is not None and any(addr in net for net in trusted)


def client_address(peer: str | None, forwarded: Sequence[str], trusted: tuple[Network, ...]) -> str:
    """Who the client is, for rate limiting.

    Without trusted proxies: the connection's peer address, whatever the headers say. With them,
    and only when the peer is one: walk X-Forwarded-For from the right (the hop our proxy
    appended) past every trusted proxy; the first hop that is not trusted is the client. Hops a
    client wrote itself are to the left of that and never reached.
    """
    if not peer:
        return "unknown"
    if not trusted or not _trusted(_address(peer), trusted):
        return peer
    hops = [h.strip() for value in forwarded for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        addr = _address(hop)
        if not _trusted(addr, trusted):
            return str(addr) if addr is not None else hop[:64]
    return str(_address(hops[0])) if hops and _address(hops[0]) else peer


class RateLimitMiddleware:
    """Token bucket per client on the API paths; 429 with Retry-After when the bucket is empty."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        *,
        fail_open: bool,
        trusted_proxies: Sequence[str] = (),
        prefixes: tuple[str, ...] = ("/api/", "/v1/"),
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.fail_open = fail_open
        self.trusted = parse_networks(trusted_proxies)
        self.prefixes = prefixes

    def client_id(self, scope: Scope) -> str:
        client = scope.get("client")
        forwarded = (
            [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"] if self.trusted else []
        )
        return client_address(client[0] if client else None, forwarded, self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        decision = await self.limiter.check(self.client_id(scope))
        if decision is None:
            if self.fail_open:
                await self.app(scope, receive, send)
                return
            await send_error(
                send,
                GatewayError(
                    503, "UNAVAILABLE", "rate limiter unavailable (redis)", service="gateway", dependency="redis"
                ),
            )
            return
        headers = {
            "x-ratelimit-limit": str(decision.limit),
            "x-ratelimit-remaining": str(decision.remaining),
            "x-ratelimit-reset": str(decision.reset_after_s),
        }
        if not decision.allowed:
            headers["retry-after"] = str(decision.retry_after_s)
            await send_error(
                send,
                GatewayError(
                    429,
                    "RESOURCE_EXHAUSTED",
                    f"rate limit of {decision.limit} requests per minute exceeded; retry in {decision.retry_after_s}s",
                    service="gateway",
                    reason="RATE_LIMITED",
                ),
                headers,
            )
            return
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *raw]
            await send(message)

        await self.app(scope, receive, send_with_headers)
