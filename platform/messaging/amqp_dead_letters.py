"""Refused AMQP messages parked in their vhost's dead-letter queue with the reason they were refused.

RabbitMQ's own dead-lettering (a reject) keeps the message but says only "rejected"; ops, and the tenant
whose message it was, need to know why. So the refusing consumer publishes a copy with the reason in a
header to the dead-letter queue (confirmed), then acknowledges the original. A crash in between leaves
the original to be refused again: at worst a second copy in the dead letters, never none.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from perdure.platform.messaging.amqp_channels import AmqpChannels
from perdure.platform.messaging.amqp_settle import ack
from perdure.platform.protocol.cell_wire import MAX_REASON_CHARS

REASON_HEADER = "perdure-dead-letter-reason"


async def dead_letter(
    channels: AmqpChannels, vhost: str, queue: str, message: AbstractIncomingMessage, reason: str
) -> None:
    await park(channels, vhost, queue, message, reason)
    await ack(message)  # failing, the original is refused again: a second copy at worst


async def park(
    channels: AmqpChannels, vhost: str, queue: str, message: AbstractIncomingMessage, reason: str
) -> None:
    """Only the copy, for a message taken without acknowledgement (a transient reply queue's)."""
    channel = await channels.channel(vhost)
    copy = aio_pika.Message(
        message.body,
        headers={**(message.headers or {}), REASON_HEADER: reason[:MAX_REASON_CHARS]},
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    await channel.default_exchange.publish(copy, routing_key=queue)
