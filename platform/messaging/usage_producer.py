"""Producing usage records to the global metering topic (key: the namespace, so one namespace's
records keep their order), acks=all and idempotent like every producer of the platform."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from perdure.infra.kafka_topics import ensure_topic
from perdure.infra.settings import Settings
from perdure.infra.telemetry import inject_kafka_headers
from perdure.platform.core.usage import USAGE_VERSION, UsageRecord
from perdure.platform.protocol.cell_wire import KIND_HEADER, VERSION_HEADER

METERING_PARTITIONS = 4


async def ensure_metering_topic(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**settings.endpoints().kafka())
    try:
        await admin.start()
        for topic, partitions in (
            (settings.metering_topic, METERING_PARTITIONS),
            (metering_dlq_topic(settings), 1),
        ):
            await ensure_topic(admin, topic, partitions)
    finally:
        await admin.close()


def metering_dlq_topic(settings: Settings) -> str:
    """Where the metering service parks records it cannot read, with the reason."""
    return f"{settings.metering_topic}.dlq"


class UsageProducer:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send_all(self, records: Sequence[UsageRecord]) -> None:
        """Send and wait until Kafka acknowledged every one of them."""
        futures = []
        for record in records:
            headers = inject_kafka_headers(
                [(KIND_HEADER, b"usage"), (VERSION_HEADER, str(USAGE_VERSION).encode())]
            )
            futures.append(
                await self.producer.send(
                    self.topic,
                    record.model_dump_json().encode(),
                    key=record.namespace.encode(),
                    headers=headers,
                )
            )
        if futures:
            await asyncio.gather(*futures)
