"""Kafka clients whose reconnects back off.

aiokafka retries a broker it cannot reach after ``retry_backoff_ms`` (fixed, 100 ms by default) in each
of its loops (metadata, fetches, the group coordinator, the producer's sender): in an outage of twenty
seconds, thousands of connection attempts per process. ``with_reconnect_backoff`` gives a consumer,
producer or admin client a client whose next attempt at a broker that just refused waits a pause
growing with the failures (exponential with jitter, ``RECONNECT_CAP_SECONDS`` at most), the pace of
every other retry of Perdure's (``perdure.infra.outages``). The hook is aiokafka's connection factory
(``AIOKafkaClient._get_conn``), through which every loop connects; the version is pinned
(pyproject.toml) because the hook is not public.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

from aiokafka.client import AIOKafkaClient, ConnectionGroup
from opentelemetry import metrics

from perdure.infra.outages import backoff_seconds

# The longest wait between attempts: the engine must resume within seconds of Kafka.
RECONNECT_CAP_SECONDS = 2.0
FIRST_RECONNECT_SECONDS = 0.2
meter = metrics.get_meter("perdure.kafka")
failed_connects = meter.create_counter(
    "perdure.kafka.failed_connects", description="connection attempts to a Kafka broker that failed"
)

KafkaObject = TypeVar("KafkaObject")


class _ReconnectBackoffClient(AIOKafkaClient):  # type: ignore[misc]
    """Only ever made by changing an ``AIOKafkaClient``'s class: its state is created on first use."""

    async def _get_conn(
        self, node_id: Any, *, group: Any = ConnectionGroup.DEFAULT, no_hint: bool = False
    ) -> Any:
        unreachable: dict[tuple[Any, Any], tuple[int, float]] = self.__dict__.setdefault(
            "_perdure_unreachable", {}
        )
        key = (node_id, group)
        failures, not_before = unreachable.get(key, (0, 0.0))
        if failures:
            await asyncio.sleep(max(0.0, not_before - time.monotonic()))
        connection = await super()._get_conn(node_id, group=group, no_hint=no_hint)
        if connection is None:  # aiokafka logged it (an outage line) and will try again
            failures = unreachable.get(key, (0, 0.0))[0] + 1
            pause = backoff_seconds(failures, base=FIRST_RECONNECT_SECONDS, cap=RECONNECT_CAP_SECONDS)
            unreachable[key] = (failures, time.monotonic() + pause)
            failed_connects.add(1)
        else:
            unreachable.pop(key, None)
        return connection


def with_reconnect_backoff(kafka_object: KafkaObject) -> KafkaObject:
    """``kafka_object`` (an ``AIOKafkaConsumer``, ``AIOKafkaProducer`` or ``AIOKafkaAdminClient``, not yet
    started), its reconnects backing off."""
    for attribute in ("_client", "client"):
        client = getattr(kafka_object, attribute, None)
        if type(client) is AIOKafkaClient:
            client.__class__ = _ReconnectBackoffClient
            return kafka_object
    raise TypeError(f"no aiokafka client found in {type(kafka_object).__name__}")
