"""Kafka, for real: keyed round trip with manual commits, and a rebalance between two consumers."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from perdure.infra.settings import Endpoints
from tests.conftest import TopicFactory


def _consumer(endpoints: Endpoints, *topics: str, group: str, **extra: object) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        **endpoints.kafka(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        **extra,
    )


async def test_keyed_round_trip_resumes_after_the_committed_offset(
    endpoints: Endpoints, kafka_producer: AIOKafkaProducer, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic(4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    sent = {}
    for i in range(6):
        meta = await kafka_producer.send_and_wait(topic, key=b"acme/order-1", value=f"m{i}".encode())
        sent[i] = meta
    # One key, one partition: the order of a workflow's messages is the order they were produced in.
    assert len({m.partition for m in sent.values()}) == 1
    partition = sent[0].partition

    consumer = _consumer(endpoints, topic, group=group)
    await consumer.start()
    try:
        seen = []
        while len(seen) < 3:
            batch = await consumer.getmany(timeout_ms=1000, max_records=3 - len(seen))
            for records in batch.values():
                seen.extend(records)
        assert [r.value for r in seen] == [b"m0", b"m1", b"m2"]
        assert all(r.key == b"acme/order-1" for r in seen)
        await consumer.commit({TopicPartition(topic, partition): seen[-1].offset + 1})
    finally:
        await consumer.stop()

    # A new member of the same group starts after what was committed, not from the beginning.
    consumer = _consumer(endpoints, topic, group=group)
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
        assert record.value == b"m3"
        assert await consumer.committed(TopicPartition(topic, partition)) == 3
    finally:
        await consumer.stop()


def _partitions(consumer: AIOKafkaConsumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


async def _poll_until_assigned(consumers: list[AIOKafkaConsumer], expected_sizes: list[int]) -> None:
    """Poll (group membership only progresses while members poll) until each member holds its share."""
    async with asyncio.timeout(60):
        while [len(_partitions(c)) for c in consumers] != expected_sizes:
            await asyncio.gather(*(c.getmany(timeout_ms=100) for c in consumers))


async def test_a_second_consumer_takes_over_half_of_the_partitions(
    endpoints: Endpoints, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic(4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = _consumer(endpoints, topic, group=group)
    second = _consumer(endpoints, topic, group=group)
    await first.start()
    try:
        await _poll_until_assigned([first], [4])
        assert _partitions(first) == {0, 1, 2, 3}

        await second.start()
        await _poll_until_assigned([first, second], [2, 2])
        assert _partitions(first) | _partitions(second) == {0, 1, 2, 3}
        assert not _partitions(first) & _partitions(second)
    finally:
        await second.stop()
        await first.stop()
