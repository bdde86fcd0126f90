"""One confirming channel per namespace vhost, opened on first use and shared by the process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from perdure.infra.amqp_reconnect import connect_with_backoff
from perdure.infra.settings import Settings
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url

log = logging.getLogger("perdure.cell")
# How long a consumer's cancel or a connection's close may take when a process stops.
CANCEL_SECONDS = 1.0


class AmqpChannels:
    def __init__(self, settings: Settings, cell: str) -> None:
        self.settings = settings
        self.cell = cell
        self._connections: dict[str, AbstractConnection] = {}
        self._channels: dict[str, AbstractChannel] = {}
        self._lock = asyncio.Lock()

    async def channel(self, vhost: str) -> AbstractChannel:
        channel = self._channels.get(vhost)
        if channel is not None and not channel.is_closed:
            return channel
        async with self._lock:
            channel = self._channels.get(vhost)
            if channel is not None and not channel.is_closed:
                return channel
            connection = self._connections.get(vhost)
            if connection is None or connection.is_closed:
                connection = await connect_with_backoff(namespace_amqp_url(self.settings, self.cell, vhost))
                self._connections[vhost] = connection
            channel = await connection.channel(publisher_confirms=True)
            self._channels[vhost] = channel
            return channel

    async def connection_channel(self, vhost: str) -> AbstractChannel:
        """A channel of its own (for a consumer with its own prefetch) on the vhost's connection."""
        await self.channel(vhost)
        return await self._connections[vhost].channel()

    async def probe(self) -> None:
        """Whether the broker answers: a connection of its own, opened and closed (the shared ones
        reconnect by themselves, and say so when they do)."""
        connection = await aio_pika.connect(self.settings.endpoints(self.cell).rabbitmq_url, timeout=5)
        await connection.close()

    async def forget(self, vhost: str) -> None:
        """Close the vhost's connection (a namespace deleted: its vhost is gone or going)."""
        self._channels.pop(vhost, None)
        connection = self._connections.pop(vhost, None)
        if connection is not None:
            await connection.close()

    async def close(self) -> None:
        """Close every connection at once, each given ``CANCEL_SECONDS``: one to a vhost that is gone
        keeps reconnecting and must not hold up the others (it is dropped with the process)."""

        async def close(connection: AbstractConnection) -> None:
            try:
                await asyncio.wait_for(connection.close(), CANCEL_SECONDS)
            except Exception:
                log.info("a broker connection did not close in time; dropped with the process")

        connections = list(self._connections.values())
        self._connections.clear()
        self._channels.clear()
        await asyncio.gather(*(close(connection) for connection in connections))


async def cancel_consumers(consumers: Iterable[tuple[AbstractQueue, str]], what: str) -> None:
    """Cancel consumers all at once, each given ``CANCEL_SECONDS``: one whose vhost is gone (a namespace
    just deleted) or whose connection is reconnecting cannot be cancelled, nor does it need to be (its
    channel is gone with it), and must not hold up a process's stop."""

    async def cancel(queue: AbstractQueue, tag: str) -> None:
        try:
            await asyncio.wait_for(queue.cancel(tag), CANCEL_SECONDS)
        except Exception:
            log.info(
                "a consumer could not be cancelled; its channel goes with its connection",
                extra={"what": what},
            )

    await asyncio.gather(*(cancel(queue, tag) for queue, tag in consumers))
