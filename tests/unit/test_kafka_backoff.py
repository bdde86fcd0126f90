"""Reconnects to a Kafka broker that refused back off: the pause grows with the failures, and every kind
of Kafka client the platform makes gets it."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient

from perdure.infra.kafka_backoff import FIRST_RECONNECT_SECONDS, with_reconnect_backoff

NOWHERE = "127.0.0.1:1"  # nothing listens there: every connection attempt fails


class _Holder:
    def __init__(self) -> None:
        self._client = AIOKafkaClient(bootstrap_servers=NOWHERE)


async def _attempts_take(client: AIOKafkaClient, attempts: int) -> float:
    began = time.monotonic()
    for _ in range(attempts):
        assert await client._get_conn(0) is None  # a broker it knows nothing of: a failed connect
    return time.monotonic() - began


async def test_each_failed_connect_to_a_broker_waits_longer_before_the_next() -> None:
    plain = _Holder()._client
    backing_off = with_reconnect_backoff(_Holder())._client
    # Pauses before attempts 2, 3 and 4: at least half of 1, 2 and 4 times the first.
    assert await _attempts_take(backing_off, 4) >= FIRST_RECONNECT_SECONDS / 2 * (1 + 2 + 4)
    assert await _attempts_take(plain, 4) < FIRST_RECONNECT_SECONDS / 2


async def test_consumers_producers_and_admin_clients_all_get_it() -> None:
    for made in (
        AIOKafkaConsumer(bootstrap_servers=NOWHERE),
        AIOKafkaProducer(bootstrap_servers=NOWHERE),
        AIOKafkaAdminClient(bootstrap_servers=NOWHERE),
    ):
        client = getattr(made, "_client", None) or made.client
        assert type(client) is AIOKafkaClient
        with_reconnect_backoff(made)
        assert type(client) is not AIOKafkaClient and isinstance(client, AIOKafkaClient)
    with pytest.raises(TypeError, match="no aiokafka client"):
        with_reconnect_backoff(object())
