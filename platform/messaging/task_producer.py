"""Producing envelopes to a cell's tasks topic (acks=all, idempotent), with kind and trace headers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from opentelemetry.context import Context

from perdure.infra.kafka_backoff import with_reconnect_backoff
from perdure.infra.settings import Endpoints
from perdure.infra.telemetry import inject_kafka_headers
from perdure.platform.protocol.cell_wire import (
    KIND_HEADER,
    VERSION_HEADER,
    WIRE_VERSION,
    TaskEnvelope,
    tasks_topic,
)


def new_producer(endpoints: Endpoints) -> AIOKafkaProducer:
    return with_reconnect_backoff(
        AIOKafkaProducer(
            **endpoints.kafka(),
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_request_size=4 * 1024 * 1024,
        )
    )


async def started_producer(endpoints: Endpoints) -> AIOKafkaProducer:
    """A producer connected to the cell's Kafka; nothing is left open if it cannot connect."""
    producer = new_producer(endpoints)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


class TaskProducer:
    def __init__(self, producer: AIOKafkaProducer, cell: str) -> None:
        self.producer = producer
        self.topic = tasks_topic(cell)

    async def send_all(
        self, envelopes: Sequence[TaskEnvelope], contexts: Sequence[Context] | None = None
    ) -> None:
        """Send and wait until Kafka acknowledged every one of them. Each carries the trace context it
        was received in (``contexts``, one each, when envelopes of several requests go out together),
        else the current one."""
        futures = []
        traces: Sequence[Context | None] = [None] * len(envelopes) if contexts is None else contexts
        for envelope, trace_context in zip(envelopes, traces, strict=True):
            headers = inject_kafka_headers(
                [(KIND_HEADER, envelope.message.kind.encode()), (VERSION_HEADER, str(WIRE_VERSION).encode())],
                context=trace_context,
            )
            futures.append(
                await self.producer.send(self.topic, envelope.encode(), key=envelope.key, headers=headers)
            )
        if futures:
            await asyncio.gather(*futures)

    async def send(self, envelope: TaskEnvelope) -> None:
        await self.send_all([envelope])
