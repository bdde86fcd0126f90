"""OpenTelemetry bootstrap: tracer and meter providers from settings, trace context in message headers.

Every service hop carries W3C trace context: Kafka headers are ``list[tuple[str, bytes]]``, AMQP headers a
``dict[str, str]``; the helpers below inject the current span's context and extract a parent context.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from perdure.infra.settings import Settings

KafkaHeaders = list[tuple[str, bytes]]


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    # Set only for the in-memory exporter (tests read what was recorded).
    spans: InMemorySpanExporter | None = None
    metric_reader: InMemoryMetricReader | None = None

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        return self.meter_provider.get_meter(name)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def configure_telemetry(
    settings: Settings, service_name: str | None = None, *, set_global: bool = True
) -> Telemetry:
    """Build providers for ``settings.telemetry_exporter`` (none, console, otlp or memory)."""
    resource = Resource.create({"service.name": service_name or settings.service_name})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    spans: InMemorySpanExporter | None = None
    memory_reader: InMemoryMetricReader | None = None
    exporter = settings.telemetry_exporter
    if exporter == "console":
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/")
        span_exporter: SpanExporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics")))
    elif exporter == "file":
        tracer_provider.add_span_processor(SimpleSpanProcessor(_file_exporter(settings, resource)))
    elif exporter == "memory":
        spans = InMemorySpanExporter()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        memory_reader = InMemoryMetricReader()
        readers.append(memory_reader)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    return Telemetry(tracer_provider, meter_provider, spans, memory_reader)


def _file_exporter(settings: Settings, resource: Resource) -> SpanExporter:
    folder = settings.telemetry_dir or settings.stack_dir / "spans"
    folder.mkdir(parents=True, exist_ok=True)
    service = str(resource.attributes.get("service.name", "perdure"))
    # Line-buffered, held for the life of the process: every span reaches the file as it ends.
    out = open(folder / f"spans-{service}-{os.getpid()}.jsonl", "a", buffering=1)
    return ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")


class _KafkaHeaderSetter(Setter[KafkaHeaders]):
    def set(self, carrier: KafkaHeaders, key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode()))


class _KafkaHeaderGetter(Getter[Iterable[tuple[str, bytes]]]):
    def get(self, carrier: Iterable[tuple[str, bytes]], key: str) -> list[str] | None:
        found = [v.decode(errors="replace") for k, v in carrier if k == key and v is not None]
        return found or None

    def keys(self, carrier: Iterable[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


class _AmqpHeaderGetter(Getter[Mapping[str, object]]):
    def get(self, carrier: Mapping[str, object], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        return [value.decode(errors="replace") if isinstance(value, bytes) else str(value)]

    def keys(self, carrier: Mapping[str, object]) -> list[str]:
        return list(carrier)


def inject_kafka_headers(headers: KafkaHeaders | None = None, context: Context | None = None) -> KafkaHeaders:
    carrier: KafkaHeaders = list(headers or [])
    propagate.inject(carrier, context=context, setter=_KafkaHeaderSetter())
    return carrier


def extract_kafka_context(headers: Iterable[tuple[str, bytes]] | None) -> Context:
    return propagate.extract(list(headers or []), getter=_KafkaHeaderGetter())


def inject_amqp_headers(
    headers: MutableMapping[str, Any] | None = None, context: Context | None = None
) -> dict[str, Any]:
    carrier: dict[str, Any] = dict(headers or {})
    propagate.inject(carrier, context=context)
    return carrier


def extract_amqp_context(headers: Mapping[str, object] | None) -> Context:
    return propagate.extract(dict(headers or {}), getter=_AmqpHeaderGetter())
