"""Outages told once: errors classified by dependency, one warning per outage and one line when it is
back, backoff within its bounds, the clients' reconnect lines folded into the outage."""

from __future__ import annotations

import logging

import pytest
from aio_pika.exceptions import AMQPConnectionError
from aiokafka.errors import KafkaConnectionError
from pymongo.errors import ServerSelectionTimeoutError

from perdure.infra.logs import client_outage_noise
from perdure.infra.outages import OUTAGES, Outages, backoff_seconds, dependency_of


def test_errors_are_told_apart_by_dependency_even_when_wrapped() -> None:
    assert dependency_of(ServerSelectionTimeoutError("no server")) == "mongodb"
    assert dependency_of(KafkaConnectionError("closed")) == "kafka"
    assert dependency_of(AMQPConnectionError("reset")) == "rabbitmq"
    try:
        try:
            raise KafkaConnectionError("closed")
        except KafkaConnectionError as inner:
            raise RuntimeError("sending failed") from inner
    except RuntimeError as wrapped:
        assert dependency_of(wrapped) == "kafka"
    assert dependency_of(ValueError("a bug")) is None


def test_backoff_doubles_within_its_cap_and_spreads() -> None:
    for attempt in range(1, 20):
        ceiling = min(10.0, 0.2 * 2 ** (attempt - 1))
        pauses = {backoff_seconds(attempt) for _ in range(20)}
        assert all(ceiling / 2 <= p <= ceiling for p in pauses)
        assert len(pauses) > 1  # jitter


def test_an_outage_is_told_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    outages = Outages()
    caplog.set_level(logging.INFO, logger="perdure.outages")
    pauses = [outages.failed("an engine batch", ServerSelectionTimeoutError("down")) for _ in range(50)]
    assert pauses[-1] > pauses[0]
    outages.failed("firing timers", ServerSelectionTimeoutError("down"))
    assert outages.unreachable() == ["mongodb"]
    outages.succeeded("an engine batch", ("kafka", "mongodb"))
    outages.succeeded("an engine batch", ("kafka", "mongodb"))
    assert outages.unreachable() == []
    told = [r.getMessage() for r in caplog.records]
    assert told == [
        "a dependency is unreachable; retrying with backoff until it is back",
        "a dependency is back",
    ]


def test_a_clients_reconnect_lines_become_the_outage_and_coordinator_moves_are_dropped() -> None:
    def line(logger: str, message: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord(logger, level, __file__, 1, message, None, None)

    OUTAGES.succeeded("a test", ("kafka",))  # whatever this process saw before
    try:
        assert not client_outage_noise(line("aiokafka.client", "Unable connect to node with id 1: refused"))
        assert "kafka" in OUTAGES.unreachable()
        assert not client_outage_noise(
            line("aiokafka.consumer.group_coordinator", "Marking the coordinator dead (node 1) for group g")
        )
        assert client_outage_noise(line("aiokafka.cluster", "Topic t is not authorized for this client"))
        OUTAGES.succeeded("a test", ("kafka",))
        rejoining = "Heartbeat failed: local member_id was not recognized; resetting and re-joining group"
        assert not client_outage_noise(line("aiokafka.consumer.group_coordinator", rejoining))
        assert "kafka" not in OUTAGES.unreachable()
        reopening = (
            "Callback <OneShotCallback: cb=<bound method RobustChannel._on_close of <aio_pika.robust_channel."
            "RobustChannel object at 0x7f>>> error: ChannelInvalidStateError: No active transport in channel"
        )
        assert not client_outage_noise(line("aio_pika.tools", reopening))
        assert "rabbitmq" in OUTAGES.unreachable()
        assert client_outage_noise(line("aio_pika.queue", "Channel 3 was closed by the broker: 406"))
        assert client_outage_noise(line("perdure.engine", "Unable connect to somewhere of our own"))
        # A callback of ours that raised is told, whatever it is called and whatever its error says.
        assert client_outage_noise(
            line(
                "aiokafka.consumer.group_coordinator",
                "User provided listener <engine._Rebalance object> for group perdure.cell.c.engine failed on "
                "partition assignment: ServerSelectionTimeoutError: timed out",
            )
        )
    finally:
        OUTAGES.succeeded("a test", ("kafka", "rabbitmq"))
