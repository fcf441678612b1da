"""OpenTelemetry CLIENT spans for the providers' HTTP calls, when tracing is on.

The router's provider calls go through aiohttp; its trace hooks open one span per request
(named after the method, as the httpx and aiohttp instrumentations name theirs) under the
current span, and put the W3C ``traceparent`` on the request. With tracing off
(:func:`masterx_runtime.tracing.enabled` false) there are no hooks and nothing is imported.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp

from masterx_runtime import tracing


def trace_configs() -> list[aiohttp.TraceConfig]:
    """The hooks to give a new ClientSession: one TraceConfig when tracing is on, else none."""
    if not tracing.enabled():
        return []
    from opentelemetry import trace
    from opentelemetry.propagate import inject
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = trace.get_tracer("masterx.router.providers")

    async def on_start(_session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams) -> None:
        url = params.url.with_user(None)  # no credentials in a span
        span = tracer.start_span(
            params.method,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": params.method,
                "url.full": str(url),
                "server.address": url.host or "",
                "server.port": url.port or 0,
            },
        )
        ctx.span = span
        inject(params.headers, context=trace.set_span_in_context(span))

    async def on_end(_session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        span = getattr(ctx, "span", None)
        if span is None:
            return
        status = params.response.status
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        span.end()

    async def on_exception(_session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestExceptionParams) -> None:
        span = getattr(ctx, "span", None)
        if span is None:
            return
        span.set_attribute("error.type", type(params.exception).__name__)
        span.set_status(Status(StatusCode.ERROR, type(params.exception).__name__))
        span.end()

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    config.on_request_end.append(on_end)
    config.on_request_exception.append(on_exception)
    return [config]
