"""Kafka, for real: keyed round trip with manual commits, and a rebalance between two consumers."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from perdure.infra.settings import Endpoints
from tests.conftest import TopicFactory


def _consumer(endpoints: Endpoints, *topics: str, group: str, **extra: object) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=endpoints.kafka_bootstrap_servers,
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


class _AssignmentWatch(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.assigned: set[int] = set()
        self.changed = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.assigned -= {tp.partition for tp in revoked}

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned |= {tp.partition for tp in assigned}
        self.changed.set()


async def _poll_until(consumers: list[AIOKafkaConsumer], done: asyncio.Event) -> None:
    # Group membership only progresses while the members poll.
    while not done.is_set():
        await asyncio.gather(*(c.getmany(timeout_ms=100) for c in consumers))


async def test_a_second_consumer_takes_over_half_of_the_partitions(
    endpoints: Endpoints, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic(4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first, second = _consumer(endpoints, group=group), _consumer(endpoints, group=group)
    watch_first, watch_second = _AssignmentWatch(), _AssignmentWatch()
    first.subscribe([topic], listener=watch_first)
    await first.start()
    try:
        done = asyncio.Event()
        poller = asyncio.create_task(_poll_until([first], done))
        await asyncio.wait_for(watch_first.changed.wait(), 30)
        assert watch_first.assigned == {0, 1, 2, 3}
        done.set()
        await poller

        second.subscribe([topic], listener=watch_second)
        await second.start()
        watch_first.changed.clear()
        done = asyncio.Event()
        poller = asyncio.create_task(_poll_until([first, second], done))
        try:
            await asyncio.wait_for(watch_second.changed.wait(), 60)
            await asyncio.wait_for(watch_first.changed.wait(), 60)
        finally:
            done.set()
            await poller
        assert watch_first.assigned | watch_second.assigned == {0, 1, 2, 3}
        assert not watch_first.assigned & watch_second.assigned
        assert len(watch_first.assigned) == len(watch_second.assigned) == 2
    finally:
        await second.stop()
        await first.stop()
