"""Tracing switches: on only with an OTLP endpoint; when off, none of its machinery is loaded.

The end-to-end trace of a chat turn is in tests/gateway/test_ops.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from masterx_runtime import tracing
from masterx_runtime.config import ConfigError, load
from masterx_runtime.settings import TracingSettings


def test_tracing_is_on_only_with_an_endpoint() -> None:
    assert not tracing.wanted(load(TracingSettings, {}))
    assert tracing.wanted(load(TracingSettings, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}))
    assert tracing.wanted(load(TracingSettings, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"}))
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SDK_DISABLED": "true"}
    assert not tracing.wanted(load(TracingSettings, off))


def test_service_name_defaults_per_service() -> None:
    assert tracing.service_name(load(TracingSettings, {}), "router") == "masterx-router"
    assert tracing.service_name(load(TracingSettings, {"OTEL_SERVICE_NAME": "tutor"}), "router") == "tutor"


def test_only_the_grpc_protocol_is_accepted() -> None:
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        load(TracingSettings, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})


def test_off_costs_nothing_no_opentelemetry_import() -> None:
    """Without an endpoint: no interceptors, no log hook, no SDK tracer, exporter or instrumentation loaded."""
    code = (
        "import os, sys\n"
        "os.environ.pop('OTEL_EXPORTER_OTLP_ENDPOINT', None); os.environ.pop('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', None)\n"
        "from masterx_runtime import clients, logs, server, tracing\n"
        "assert tracing.setup('router') is False\n"
        "assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []\n"
        "assert logs.trace_id_getter is None and tracing.current_trace_id() == ''\n"
        "ch = clients.channel('127.0.0.1:1')\n"
        "import services.gateway.app as app; app.create_app()\n"
        # redis-py imports the OpenTelemetry API for its own optional metrics; ours stays unloaded.
        "ours = ('opentelemetry.sdk.trace', 'opentelemetry.exporter', 'opentelemetry.instrumentation')\n"
        "bad = sorted(m for m in sys.modules if m.startswith(ours))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_on_installs_interceptors_and_logs_the_trace_id() -> None:
    code = (
        "import json, logging, os\n"
        "os.environ['OTEL_EXPORTER_OTLP_ENDPOINT'] = 'http://127.0.0.1:9'\n"
        "os.environ['OTEL_EXPORTER_OTLP_TIMEOUT'] = '1'\n"
        "from masterx_runtime import logs, tracing\n"
        "assert tracing.setup('router') is True and tracing.setup('router') is True\n"
        "assert len(tracing.server_interceptors()) == 1 and len(tracing.client_interceptors()) == 4\n"
        "from opentelemetry import trace\n"
        "fmt = logs.JsonFormatter('router')\n"
        "rec = logging.LogRecord('x', logging.INFO, '', 0, 'hello', None, None)\n"
        "assert 'trace_id' not in json.loads(fmt.format(rec))\n"
        "with trace.get_tracer('t').start_as_current_span('s') as span:\n"
        "    tid = format(span.get_span_context().trace_id, '032x')\n"
        "    assert json.loads(fmt.format(rec))['trace_id'] == tid == tracing.current_trace_id()\n"
        "from opentelemetry.propagate import inject\n"
        "with tracing.untraced():\n"
        "    with trace.get_tracer('t').start_as_current_span('polled') as span:\n"
        "        assert not span.is_recording()\n"
        "        carrier = {}; inject(carrier)\n"
        "        assert carrier['traceparent'].endswith('-00'), carrier\n"
        "assert tracing.current_trace_id() == ''\n"
        "tracing.shutdown()\n"
        "assert logs.trace_id_getter is None and not tracing.enabled()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
