"""Creating a cell (topics, indexes, record) and a namespace on it (record, vhost, queues), idempotently."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import aio_pika
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from perdure.infra.settings import Settings
from perdure.platform.cell.app_loader import load_app
from perdure.platform.cell.connections import Databases, rabbitmq_admin
from perdure.platform.cell.control_store import CellRecord, ControlError, NamespaceRecord, check_name

ACTIVITIES_QUEUE = "activities"
ACTIVITIES_DEAD_LETTERS = "activities.dead-letters"
RESULTS_EXCHANGE = "results"
DEAD_LETTER_EXCHANGE = "dead-letters"


async def create_cell(settings: Settings, name: str, partitions: int) -> CellRecord:
    record = CellRecord.new(name, partitions, settings.cell_database(name))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.endpoints(name).kafka_bootstrap_servers)
    await admin.start()
    try:
        for topic, count in ((record.topic, partitions), (record.dlq_topic, 1)):
            try:
                await admin.create_topics([NewTopic(topic, num_partitions=count, replication_factor=1)])
            except TopicAlreadyExistsError:
                described = await admin.describe_topics([topic])
                existing = len(described[0]["partitions"])
                if existing != count:
                    raise ControlError(
                        f"topic {topic} exists with {existing} partitions, not {count}"
                    ) from None
    finally:
        await admin.close()
    databases = Databases.connect(settings, name)
    try:
        await databases.control.ensure_indexes()
        await databases.runs(settings, name).ensure_indexes()
        return await databases.control.add_cell(record)
    finally:
        await databases.close()


def namespace_amqp_url(settings: Settings, cell: str, vhost: str) -> str:
    """The platform's own AMQP URL, moved to a namespace's vhost."""
    parts = urlsplit(settings.endpoints(cell).rabbitmq_url)
    netloc = parts.netloc
    return f"{parts.scheme}://{netloc}/{quote(vhost, safe='')}"


async def create_namespace(settings: Settings, name: str, app: str, cell: str) -> NamespaceRecord:
    check_name("namespace", name)
    load_app(app)  # refuse an app that does not import, before anything is made
    databases = Databases.connect(settings, cell)
    try:
        await databases.control.get_cell(cell)
        record = NamespaceRecord(name=name, app=app, cell=cell, vhost=name, created_at=datetime.now(UTC))
        await provision_vhost(settings, cell, record.vhost)
        return await databases.control.add_namespace(record)
    finally:
        await databases.close()


async def provision_vhost(settings: Settings, cell: str, vhost: str) -> None:
    platform_user = urlsplit(settings.endpoints(cell).rabbitmq_url).username or "guest"
    async with rabbitmq_admin(settings, cell) as admin:
        await admin.create_vhost(vhost)
        await admin.set_permissions(vhost, platform_user)
        await admin.set_policy(
            vhost,
            "activities-dead-letters",
            f"^{ACTIVITIES_QUEUE}$",
            {"dead-letter-exchange": DEAD_LETTER_EXCHANGE},
        )
    connection = await aio_pika.connect(namespace_amqp_url(settings, cell, vhost))
    try:
        channel = await connection.channel()
        dead_letters = await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        parked = await channel.declare_queue(ACTIVITIES_DEAD_LETTERS, durable=True)
        await parked.bind(dead_letters)
        await channel.declare_queue(ACTIVITIES_QUEUE, durable=True)
        await channel.declare_exchange(RESULTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    finally:
        await connection.close()
