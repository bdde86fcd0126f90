"""A span context survives a real Kafka hop and a real AMQP hop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace

from perdure.infra.settings import Endpoints, load_settings
from perdure.infra.telemetry import (
    Telemetry,
    configure_telemetry,
    extract_amqp_context,
    extract_kafka_context,
    inject_amqp_headers,
    inject_kafka_headers,
)
from tests.conftest import TopicFactory


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    configured = configure_telemetry(load_settings(telemetry_exporter="memory"), "test", set_global=False)
    yield configured
    configured.shutdown()


async def test_span_context_crosses_kafka(
    telemetry: Telemetry, endpoints: Endpoints, kafka_producer: AIOKafkaProducer, kafka_topic: TopicFactory
) -> None:
    tracer = telemetry.tracer("test")
    topic = await kafka_topic(1)
    with tracer.start_as_current_span("produce") as producing:
        await kafka_producer.send_and_wait(topic, b"payload", key=b"k", headers=inject_kafka_headers())
    consumer = AIOKafkaConsumer(topic, **endpoints.kafka(), auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaks from the producing side
    with tracer.start_as_current_span("consume", context=extract_kafka_context(record.headers)) as consuming:
        pass
    assert consuming.context.trace_id == producing.context.trace_id
    assert consuming.parent is not None and consuming.parent.span_id == producing.context.span_id
    assert telemetry.spans is not None
    assert {s.name for s in telemetry.spans.get_finished_spans()} == {"produce", "consume"}


async def test_span_context_crosses_amqp(telemetry: Telemetry, amqp_channel: AbstractChannel) -> None:
    tracer = telemetry.tracer("test")
    queue = await amqp_channel.declare_queue("hop", durable=True)
    with tracer.start_as_current_span("publish") as publishing:
        await amqp_channel.default_exchange.publish(
            aio_pika.Message(b"payload", headers=inject_amqp_headers()), routing_key="hop"
        )
    message = await queue.get(timeout=5)
    assert message is not None
    await message.ack()
    with tracer.start_as_current_span("deliver", context=extract_amqp_context(message.headers)) as delivering:
        pass
    assert delivering.context.trace_id == publishing.context.trace_id
    assert delivering.parent is not None and delivering.parent.span_id == publishing.context.span_id


def test_no_context_gives_a_new_root() -> None:
    assert trace.get_current_span(extract_kafka_context(None)) is trace.INVALID_SPAN
    assert trace.get_current_span(extract_amqp_context({"traceparent": "garbage"})) is trace.INVALID_SPAN
