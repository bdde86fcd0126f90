"""Telemetry providers from settings (the in-memory exporter, as tests use it)."""

from __future__ import annotations

from perdure.infra.settings import load_settings
from perdure.infra.telemetry import configure_telemetry


def test_memory_exporter_records_spans_and_metrics() -> None:
    telemetry = configure_telemetry(load_settings(telemetry_exporter="memory"), "unit", set_global=False)
    try:
        with telemetry.tracer("t").start_as_current_span("work"):
            pass
        telemetry.meter("m").create_counter("perdure.test.count").add(3, {"namespace": "acme"})
        assert telemetry.spans is not None and telemetry.metric_reader is not None
        assert [s.name for s in telemetry.spans.get_finished_spans()] == ["work"]
        data = telemetry.metric_reader.get_metrics_data()
        points = [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "perdure.test.count"
            for point in metric.data.data_points
        ]
        assert [(p.value, dict(p.attributes)) for p in points] == [(3, {"namespace": "acme"})]
    finally:
        telemetry.shutdown()


def test_no_exporter_still_gives_working_providers() -> None:
    telemetry = configure_telemetry(load_settings(telemetry_exporter="none"), set_global=False)
    with telemetry.tracer("t").start_as_current_span("quiet") as span:
        assert span.get_span_context().is_valid
    assert telemetry.spans is None
    telemetry.shutdown()
