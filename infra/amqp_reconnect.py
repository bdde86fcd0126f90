"""A robust AMQP connection (aio-pika's: channels, queues, bindings and consumers restored after a reconnect)
whose reconnects back off instead of trying every few seconds for ever at one pace, and whose outages
are told once through ``perdure.infra.outages``."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection

from perdure.infra.outages import OUTAGES

FIRST_RECONNECT_SECONDS = 0.5
MAX_RECONNECT_SECONDS = 5.0


class BackoffRobustConnection(RobustConnection):
    """Waits between reconnect attempts grow with the outage (half of it so far, within bounds: a
    geometric series, as exponential backoff) and are stretched by a jitter fixed per connection, so the
    connections of many processes do not all knock at the same moment when the broker comes back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._jitter = 1 + random.uniform(0, 0.5)
        self._outage_since: float | None = None
        self.close_callbacks.add(self._went_away)
        self.reconnect_callbacks.add(self._came_back)

    # aio-pika reads this before each attempt (and in its log lines): the pause grows with the outage.
    @property
    def reconnect_interval(self) -> float:
        if self._outage_since is None:
            return FIRST_RECONNECT_SECONDS
        elapsed = time.monotonic() - self._outage_since
        return min(MAX_RECONNECT_SECONDS, max(FIRST_RECONNECT_SECONDS, elapsed / 2)) * self._jitter

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:  # set by aio-pika's constructor; the property rules
        pass

    def _went_away(self, _: object, exc: BaseException | None) -> None:
        if self._close_called or exc is None or isinstance(exc, asyncio.CancelledError):
            return  # closed on purpose
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        OUTAGES.went_away("rabbitmq", f"{type(exc).__name__}: {exc}")

    def _came_back(self, _: object) -> None:
        self._outage_since = None
        OUTAGES.succeeded("amqp connection", ("rabbitmq",))


async def connect_with_backoff(url: str, **options: Any) -> AbstractRobustConnection:
    """``aio_pika.connect_robust`` with reconnects that back off (the first connect fails fast)."""
    connection: AbstractRobustConnection = await aio_pika.connect_robust(
        url, connection_class=BackoffRobustConnection, **options
    )
    return connection
