"""Settling a delivered message whose channel went with a broker outage: no error, no outage."""

from __future__ import annotations

import logging
from typing import cast

import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import MessageProcessError
from aiormq.exceptions import ChannelInvalidStateError

from perdure.infra.outages import OUTAGES
from perdure.platform.messaging.amqp_settle import ack, hand_back


class _Delivered:
    """A delivered message whose settling raises ``error`` (or succeeds, with None)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.settled: list[str] = []

    async def ack(self) -> None:
        self._settle("ack")

    async def nack(self, requeue: bool = True) -> None:
        self._settle(f"nack requeue={requeue}")

    def _settle(self, how: str) -> None:
        if self.error is not None:
            raise self.error
        self.settled.append(how)


def _message(error: BaseException | None) -> tuple[_Delivered, AbstractIncomingMessage]:
    delivered = _Delivered(error)
    return delivered, cast(AbstractIncomingMessage, delivered)


async def test_a_settle_on_a_gone_channel_raises_nothing_and_opens_no_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Settled after the broker is back (delivered before the outage): the broker is not down.
    OUTAGES.succeeded("a test", ("rabbitmq",))  # whatever this process saw before
    caplog.clear()
    _, gone = _message(ChannelInvalidStateError("No active transport in channel"))
    with caplog.at_level(logging.INFO):
        assert await ack(gone) is False
        assert await hand_back(gone) is False
    assert "rabbitmq" not in OUTAGES.unreachable()
    assert caplog.records == []


async def test_a_message_settled_twice_is_our_bug_not_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    OUTAGES.succeeded("a test", ("rabbitmq",))  # whatever this process saw before
    _, twice = _message(MessageProcessError("Message already processed", None))
    with caplog.at_level(logging.WARNING, logger="perdure.amqp"):
        assert await ack(twice) is False
    assert "rabbitmq" not in OUTAGES.unreachable()
    assert [r.getMessage() for r in caplog.records] == ["acknowledging a message failed"]


async def test_a_live_channel_settles_as_asked() -> None:
    delivered, message = _message(None)
    assert await ack(message) is True and await hand_back(message) is True
    assert delivered.settled == ["ack", "nack requeue=True"]
