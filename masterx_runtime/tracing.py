"""OpenTelemetry tracing for every service and the gateway, off unless an OTLP endpoint is set.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, :func:`setup`
installs a tracer provider that batches spans to that OTLP/gRPC collector, instruments
``httpx`` where an image ships that instrumentation (the router's provider calls use aiohttp and
open their span themselves: ``services/router/providers/http_spans.py``), and the helpers below
hand out the official grpc.aio
interceptors. The W3C ``traceparent`` travels in gRPC metadata, so one chat turn is one trace:
gateway HTTP span -> gRPC client/server spans of emotion, reasoning and router -> the provider's
HTTP span. The current trace id also goes into every JSON log line (``trace_id``).

Without an endpoint nothing here loads the SDK's tracer, the exporter or the instrumentations:
the interceptor lists are empty and the log formatter's hook stays unset, so tracing costs
nothing when it is off.

Every other OpenTelemetry SDK variable works as documented by OpenTelemetry
(``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_EXPORTER_OTLP_INSECURE``, ``OTEL_TRACES_SAMPLER``,
``OTEL_RESOURCE_ATTRIBUTES``, ...); the SDK reads them itself.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

from masterx_runtime import logs
from masterx_runtime.config import load
from masterx_runtime.settings import TracingSettings

log = logging.getLogger("masterx.tracing")

_provider: Any = None


def wanted(cfg: TracingSettings) -> bool:
    """Pure: whether these settings turn tracing on."""
    return bool(cfg.otlp_endpoint or cfg.otlp_traces_endpoint) and not cfg.sdk_disabled


def enabled() -> bool:
    """True once :func:`setup` installed a tracer provider in this process."""
    return _provider is not None


def service_name(cfg: TracingSettings, service: str) -> str:
    """Pure: the ``service.name`` resource attribute (``OTEL_SERVICE_NAME`` wins)."""
    return cfg.service_name or f"masterx-{service}"


def setup(service: str, cfg: TracingSettings | None = None) -> bool:
    """Install the OTLP tracer provider when configured; True if tracing is on. Idempotent."""
    global _provider
    if _provider is not None:
        return True
    cfg = cfg or load(TracingSettings)
    if not wanted(cfg):
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name(cfg, service)}))
    # The exporter reads the endpoint, headers, TLS and timeout from the standard variables.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    try:  # only images that make outbound HTTP calls (the router) ship the httpx instrumentation
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        pass
    else:
        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    logs.trace_id_getter = current_trace_id
    log.info(
        "tracing on",
        extra={"endpoint": cfg.otlp_traces_endpoint or cfg.otlp_endpoint, "service_name": service_name(cfg, service)},
    )
    return True


def shutdown() -> None:
    """Flush buffered spans and stop exporting (called when the process stops)."""
    global _provider
    if _provider is None:
        return
    provider, _provider = _provider, None
    logs.trace_id_getter = None
    try:
        provider.shutdown()
    except Exception:  # a collector that went away must not turn a clean stop into a crash
        log.warning("flushing spans failed", exc_info=True)


def server_interceptors() -> list[Any]:
    """The OpenTelemetry grpc.aio server interceptor (outermost) when tracing is on, else none."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider, filter_=_not_health)]


def client_interceptors() -> list[Any]:
    """The OpenTelemetry grpc.aio client interceptors (they inject ``traceparent``), else none."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=_provider, filter_=_not_health))


def _not_health(details: Any) -> bool:
    """Health checks and reflection poll all the time; they would bury the interesting traces."""
    method = getattr(details, "method", "")
    if isinstance(method, bytes):
        method = method.decode()
    return not str(method).startswith(("/grpc.health.v1.", "/grpc.reflection."))


def current_trace_id() -> str:
    """Hex trace id of the span active now ("" outside any span or when tracing is off)."""
    if _provider is None:
        return ""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Calls made inside are not traced, here or in the services they reach (background polling).

    An unsampled parent is made current, so child spans are not recorded and the ``traceparent``
    sent on carries the not-sampled flag: the callee's parent-based sampler drops its spans too.
    """
    if _provider is None:
        yield
        return
    from opentelemetry import context, trace

    parent = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=random.getrandbits(128) or 1,
            span_id=random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
        )
    )
    token = context.attach(trace.set_span_in_context(parent))
    try:
        yield
    finally:
        context.detach(token)
