"""OpenTelemetry for the server processes, when ``otel_enabled`` is set and the ``[otel]`` extra is
installed: one tracer provider per process exporting spans by OTLP in batches.

The exporter follows OpenTelemetry's own environment variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``OTEL_EXPORTER_OTLP_HEADERS``, and
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the default here, or ``grpc``);
``OTEL_SERVICE_NAME`` overrides the process' service name.
"""

from __future__ import annotations

import os
from typing import Any

from cli.failures import CommandFailed
from shared.settings import Settings


def tracer_provider(settings: Settings, service_name: str) -> Any:
    """The process' ``TracerProvider``, or None when tracing is off; call ``shutdown()`` on it at exit
    so the last spans are sent."""
    if not settings.otel_enabled:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise CommandFailed(
            "otel_enabled is set but OpenTelemetry is not installed: pip install 'aiorouter[otel]'"
        ) from exc
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    return provider


def _exporter() -> Any:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    except ImportError as exc:
        raise CommandFailed(
            f"the OTLP {protocol} exporter is not installed: pip install 'aiorouter[otel]'"
        ) from exc
    return OTLPSpanExporter()
