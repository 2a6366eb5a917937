"""Logging, tracing and metrics, set up once for every service."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter, Histogram, start_http_server

from mesh.config import MeshConfig

RPCS = Counter("agentmesh_rpcs", "RPCs served", ["service", "method", "code", "tenant"])
RPC_LATENCY = Histogram("agentmesh_rpc_latency_seconds", "RPC latency", ["service", "method"],
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

_SECRET_KEYS = ("token", "secret", "password", "authorization", "credential", "api_key", "refresh")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed with `extra={"fields": {...}}` are merged in."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "service": self.service, "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(redact(fields))
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def redact(value: Any) -> Any:
    """A copy with every secret-looking key's value replaced, for logs and audit rows."""
    if isinstance(value, dict):
        return {k: ("[redacted]" if any(s in str(k).lower() for s in _SECRET_KEYS) else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


_tracing = False


def tracing_enabled() -> bool:
    """Whether this process traces: an exporter is configured (AGENTMESH_OTEL_EXPORTER) or was installed.

    Without one, servers and channels carry no OpenTelemetry interceptors at all: their spans would be recorded
    nowhere, and on a busy mesh the interceptors cost about a twentieth of every service's CPU."""
    return _tracing or os.environ.get("AGENTMESH_OTEL_EXPORTER", "none").strip().lower() not in ("", "none")


def setup_tracing(config: MeshConfig, service: str) -> None:
    """Installs a tracer provider with the configured exporter; `none` (the default) exports nothing."""
    global _tracing
    if config.otel_exporter == "none":
        return
    _tracing = True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter: SpanExporter
    if config.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.otel_endpoint, insecure=True)
    elif config.otel_exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        raise SystemExit("agentmesh: AGENTMESH_OTEL_EXPORTER must be none, console or otlp, "
                         f"not {config.otel_exporter!r}")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def start_metrics(port: int | None, host: str = "127.0.0.1") -> int | None:
    """Serves Prometheus metrics over HTTP; returns the bound port (None when disabled)."""
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)


def trace_id() -> str:
    span = trace.get_current_span().get_span_context()
    return format(span.trace_id, "032x") if span.is_valid else ""
