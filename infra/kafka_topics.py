"""Creating a topic and waiting until it can be used: every partition with a leader.

A consumer group formed right after ``CreateTopics`` can see the topic without its partitions: its
leader then assigns nothing, and the members learn of the partitions only at their next metadata
refresh, minutes later. Waiting here keeps a new cell's first process from starting empty-handed."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

READY_SECONDS = 30.0


async def ensure_topic(admin: AIOKafkaAdminClient, topic: str, partitions: int) -> int:
    """Create ``topic`` with ``partitions`` unless it exists; wait until each of its partitions has a
    leader; return how many partitions it has (an existing topic may have another count)."""
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    deadline = time.monotonic() + READY_SECONDS
    while True:
        [described] = await admin.describe_topics([topic])
        found = described["partitions"]
        if described["error_code"] == 0 and found and all(p["leader"] >= 0 for p in found):
            return len(found)
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no leader for every partition after {READY_SECONDS:.0f} s")
        await asyncio.sleep(0.1)
