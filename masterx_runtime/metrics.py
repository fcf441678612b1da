"""Prometheus metrics shared by every service, and a tiny HTTP endpoint to expose them.

The endpoint runs on the service's event loop (no extra thread) and also serves ``/health``
as JSON with the service's details (e.g. the ONNX execution provider really in use).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("masterx.metrics")

RPC_TOTAL = Counter("masterx_rpc_total", "RPCs handled", ["service", "method", "code"])
RPC_LATENCY = Histogram(
    "masterx_rpc_latency_seconds",
    "RPC latency",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RPC_IN_FLIGHT = Gauge("masterx_rpc_in_flight", "RPCs in progress", ["service"])
SERVING = Gauge("masterx_serving", "1 when the service reports SERVING", ["service"])
STORE_UP = Gauge("masterx_store_up", "1 while a store the service uses answers its ping", ["service", "store"])


def observe_rpc(service: str, method: str, code: str, seconds: float) -> None:
    RPC_TOTAL.labels(service, method, code).inc()
    RPC_LATENCY.labels(service, method).observe(seconds)


class RpcMetrics:
    """The RPC metrics of one (service, method) with their label children resolved once.

    ``labels()`` validates and looks the labels up under a lock on every call; the server
    interceptor keeps one of these per method, so a call costs a dict lookup on the status code.
    (A child removed from its metric with ``remove()``/``clear()`` would stay cached: nothing
    in MasterX removes RPC metric children.)
    """

    __slots__ = ("_latency", "_totals", "method", "service")

    def __init__(self, service: str, method: str) -> None:
        self.service, self.method = service, method
        self._latency = RPC_LATENCY.labels(service, method)
        self._totals: dict[str, Counter] = {}

    def observe(self, code: str, seconds: float) -> None:
        """Same as :func:`observe_rpc` for this service and method."""
        total = self._totals.get(code)
        if total is None:
            total = self._totals[code] = RPC_TOTAL.labels(self.service, self.method, code)
        total.inc()
        self._latency.observe(seconds)


class MetricsServer:
    """Minimal HTTP/1.1 server: GET /metrics and GET /health."""

    def __init__(self, host: str, port: int, health: Callable[[], Mapping[str, Any]]) -> None:
        self.host, self.port, self._health = host, port, health
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/metrics"):
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest()
            elif path.startswith("/health"):
                details = dict(self._health())
                status = "200 OK" if details.get("status") == "SERVING" else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(details).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
