"""How far a consumer group is behind on a topic: records not yet committed by the group.

Admission keeps the engine's backlog small (so that the order in which namespaces get their turn is the
order in which the engine sees their work); the demo waits for metering's to reach zero.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from perdure.infra.kafka_backoff import with_reconnect_backoff

log = logging.getLogger("perdure.kafka")


class ConsumerBacklog:
    def __init__(
        self,
        kafka: dict[str, Any],
        topic: str,
        partitions: int,
        group: str,
        *,
        every_seconds: float = 0.05,
    ) -> None:
        self.topic = topic
        # The consumer used for end offsets subscribes to nothing, so it learns no partitions itself.
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.group = group
        self.every_seconds = every_seconds
        self._kafka = kafka
        self._admin = with_reconnect_backoff(AIOKafkaAdminClient(**kafka))
        self._offsets = self._offsets_consumer()
        self._records = 0
        self._measured_at = -float("inf")
        self._admitted_since = 0
        self._measuring: asyncio.Task[None] | None = None
        self._known = False  # whether a measurement succeeded yet

    def _offsets_consumer(self) -> AIOKafkaConsumer:
        return with_reconnect_backoff(AIOKafkaConsumer(**self._kafka, enable_auto_commit=False))

    async def start(self) -> None:
        """Connect; may be called again after it failed (Kafka unreachable)."""
        await self._admin.start()  # a no-op once started
        try:
            await self._offsets.start()
        except BaseException:
            # A consumer is started once: the next attempt takes a new one.
            await self._offsets.stop()
            self._offsets = self._offsets_consumer()
            raise

    async def stop(self) -> None:
        await self.stop_measuring()
        await self._offsets.stop()
        await self._admin.close()

    async def stop_measuring(self) -> None:
        """Cancel the measurement in the background, if one runs."""
        if self._measuring is not None:
            self._measuring.cancel()
            await asyncio.gather(self._measuring, return_exceptions=True)

    def admitted(self, count: int) -> None:
        """Count records produced since the last measurement (they are backlog until it shows them)."""
        self._admitted_since += count

    def estimate(self) -> int:
        """At least the backlog: the last measurement plus what was admitted since (the group only takes
        from it meanwhile). A measurement older than ``every_seconds`` is renewed in the background:
        while the estimate leaves room, admitting waits for no Kafka round trip."""
        self._measure_if_stale()
        if not self._known:
            return sys.maxsize  # nothing measured yet: no room known
        return self._records + self._admitted_since

    async def records(self) -> int:
        """The backlog as of a measurement at most ``every_seconds`` old (waits for it if need be)."""
        self._measure_if_stale()
        if self._measuring is not None:
            await asyncio.shield(self._measuring)
        return self._records + self._admitted_since

    def _measure_if_stale(self) -> None:
        if self._measuring is None and time.monotonic() - self._measured_at >= self.every_seconds:
            self._measuring = asyncio.create_task(self._remeasure(self._admitted_since))

    async def _remeasure(self, counted: int) -> None:
        # ``counted`` was admitted before this measurement began, so it is in it. What is admitted while
        # it runs stays counted on top of it: it may be in it too (then counted twice, an overestimate
        # that only holds admission back a little).
        try:
            measured = await self._measure()
        except Exception:
            log.warning("measuring a consumer group's backlog failed", exc_info=True)
        else:
            self._records = measured
            self._admitted_since -= counted
            self._known = True
        finally:
            self._measured_at = time.monotonic()
            self._measuring = None

    async def end_offsets(self) -> dict[int, int]:
        """The next offset of each partition, as of now."""
        ends = await self._offsets.end_offsets(self.partitions)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def committed_offsets(self) -> dict[int, int]:
        """The group's committed offset of each partition (0 where it committed none)."""
        committed = await self._admin.list_consumer_group_offsets(self.group, partitions=self.partitions)
        return {
            tp.partition: committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
            for tp in self.partitions
        }

    async def _measure(self) -> int:
        topic_partitions = self.partitions
        ends = await self._offsets.end_offsets(topic_partitions)
        committed = await self._admin.list_consumer_group_offsets(self.group, partitions=topic_partitions)
        return sum(
            max(0, ends[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0))
            for tp in topic_partitions
        )
