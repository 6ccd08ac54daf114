"""OpenTelemetry set-up of the server processes: off unless otel_enabled; on, a provider exporting by
OTLP under the process' service name."""

from __future__ import annotations

import pytest

from cli.tracing_setup import tracer_provider
from shared.settings import settings_from_mapping


def test_tracing_is_off_by_default() -> None:
    """Without otel_enabled no provider is built (the processes pass no tracer down)."""
    assert tracer_provider(settings_from_mapping({}, env={}), "aiorouter-ingress") is None


def test_enabled_tracing_builds_an_otlp_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """With otel_enabled the provider names the service and exports by OTLP (http/protobuf by default)."""
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    provider = tracer_provider(settings_from_mapping({"otel_enabled": True}, env={}), "aiorouter-ingress")
    try:
        assert provider.resource.attributes["service.name"] == "aiorouter-ingress"
        (processor,) = provider._active_span_processor._span_processors
        assert type(processor.span_exporter).__module__.endswith("proto.http.trace_exporter")
    finally:
        provider.shutdown()
