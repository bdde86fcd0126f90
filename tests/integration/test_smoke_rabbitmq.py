"""RabbitMQ, for real: publisher confirms, vhost isolation of users, dead-lettering with its reason."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import ProbableAuthenticationError
from aiormq.exceptions import ChannelNotFoundEntity, InvalidFrameError
from pamqp.commands import Basic

from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.infra.settings import Endpoints
from tests.conftest import amqp_url


async def test_publisher_confirms_acknowledge_a_routed_message(amqp_channel: AbstractChannel) -> None:
    queue = await amqp_channel.declare_queue("ingress", durable=True)
    confirmation = await amqp_channel.default_exchange.publish(
        aio_pika.Message(b"start", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="ingress"
    )
    assert isinstance(confirmation, Basic.Ack)
    message = await queue.get(timeout=5)
    assert message is not None and message.body == b"start"
    await message.ack()

    # Publishing to an exchange that does not exist is refused, not silently dropped.
    missing = await amqp_channel.get_exchange("no-such-exchange", ensure=False)
    with pytest.raises(ChannelNotFoundEntity):
        await missing.publish(aio_pika.Message(b"lost?"), routing_key="x")


async def test_a_user_of_one_vhost_is_refused_on_another(
    endpoints: Endpoints, rabbitmq_admin: RabbitMQAdmin, vhost: str
) -> None:
    other = f"{vhost}-other"
    user, password = f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await rabbitmq_admin.create_vhost(other)
    await rabbitmq_admin.create_user(user, password)
    try:
        await rabbitmq_admin.set_permissions(vhost, user)
        own = await aio_pika.connect(amqp_url(endpoints, vhost=vhost, user=user, password=password))
        await own.close()
        # The broker answers Connection.Open with Connection.Close (530 NOT_ALLOWED).
        with pytest.raises(InvalidFrameError, match=r"Connection\.Close"):
            await aio_pika.connect(amqp_url(endpoints, vhost=other, user=user, password=password))
        with pytest.raises(ProbableAuthenticationError):
            await aio_pika.connect(amqp_url(endpoints, vhost=vhost, user=user, password="wrong"))
    finally:
        await rabbitmq_admin.delete_user(user)
        await rabbitmq_admin.delete_vhost(other)


async def test_a_rejected_message_is_dead_lettered_with_its_reason(
    amqp_channel: AbstractChannel, rabbitmq_admin: RabbitMQAdmin, vhost: str
) -> None:
    dead_letters = await amqp_channel.declare_exchange(
        "dead-letters", aio_pika.ExchangeType.FANOUT, durable=True
    )
    dlq = await amqp_channel.declare_queue("ingress.dlq", durable=True)
    await dlq.bind(dead_letters)
    # The dead-letter exchange is set by policy, as provisioning does, not by queue arguments.
    await rabbitmq_admin.set_policy(
        vhost, "dead-letters", "^ingress$", {"dead-letter-exchange": "dead-letters"}
    )
    ingress = await amqp_channel.declare_queue("ingress", durable=True)
    await amqp_channel.default_exchange.publish(
        aio_pika.Message(b"{not json", headers={"perdure-reject-reason": "malformed"}), routing_key="ingress"
    )
    message = await ingress.get(timeout=5)
    assert message is not None
    await message.reject(requeue=False)

    async with asyncio.timeout(15), dlq.iterator() as deliveries:
        dead = await anext(deliveries)
    assert dead.body == b"{not json"
    assert dead.headers["perdure-reject-reason"] == "malformed"
    deaths = dead.headers["x-death"]
    assert isinstance(deaths, list) and deaths[0]["reason"] == "rejected"  # type: ignore[index]
    assert deaths[0]["queue"] == "ingress"  # type: ignore[index]
    await dead.ack()
