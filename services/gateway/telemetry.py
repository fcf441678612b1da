"""OpenTelemetry spans for the gateway's HTTP requests (only when tracing is on).

:mod:`masterx_runtime.tracing` sets the tracer provider up; this adds the official FastAPI
instrumentation, whose server span is the root of a chat turn's trace (the gRPC client spans
to the services hang under it). Per-chunk ``http send``/``receive`` spans are left out: an SSE
answer would otherwise add one span per token.
"""

from __future__ import annotations

from fastapi import FastAPI

from masterx_runtime import tracing

#: Polled constantly by probes, the pages' own assets and the open ops page: no spans for them.
EXCLUDED_URLS = "/healthz,/readyz,/metrics,/static/.*,/docs-assets/.*,/api/v1/ops/overview"


def instrument(app: FastAPI) -> bool:
    """Instrument ``app`` when tracing is on; True if it was."""
    if not tracing.enabled():
        return False
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"])
    return True
