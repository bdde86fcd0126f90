"""One confirming channel per namespace vhost, opened on first use and shared by the process."""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractChannel, AbstractConnection

from perdure.infra.amqp_reconnect import connect_with_backoff
from perdure.infra.settings import Settings
from perdure.platform.cell.provisioning import namespace_amqp_url


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

    async def forget(self, vhost: str) -> None:
        """Close the vhost's connection (a namespace deleted: its vhost is gone or going)."""
        self._channels.pop(vhost, None)
        connection = self._connections.pop(vhost, None)
        if connection is not None:
            await connection.close()

    async def close(self) -> None:
        for connection in self._connections.values():
            await connection.close()
        self._connections.clear()
        self._channels.clear()
