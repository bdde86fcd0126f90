"""Fixtures shared by every test. Integration fixtures start nothing until a test asks for them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aio_pika
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.infra.settings import Endpoints, load_settings

from .service_endpoints import resolve_services

Document = dict[str, object]


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    with resolve_services(load_settings()) as resolved:
        yield resolved


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: for topics, databases, vhosts and queues."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
async def kafka_admin(endpoints: Endpoints) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**endpoints.kafka())
    await admin.start()
    yield admin
    await admin.close()


@pytest.fixture(scope="session")
async def kafka_producer(endpoints: Endpoints) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(**endpoints.kafka(), acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    yield producer
    await producer.stop()


TopicFactory = Callable[[int], Awaitable[str]]


@pytest.fixture
async def kafka_topic(kafka_admin: AIOKafkaAdminClient) -> AsyncIterator[TopicFactory]:
    """Creates uniquely named topics with the given partition count; deletes them afterwards."""
    created: list[str] = []

    async def create(partitions: int = 1) -> str:
        name = f"perdure.test.{uuid.uuid4().hex[:12]}"
        await kafka_admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    yield create
    if created:
        await kafka_admin.delete_topics(created)


@pytest.fixture(scope="session")
async def mongo_client(endpoints: Endpoints) -> AsyncIterator[AsyncMongoClient[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        endpoints.mongodb_uri, serverSelectionTimeoutMS=5000
    )
    await client.admin.command("ping")
    yield client
    await client.close()


@pytest.fixture
async def mongo_db(mongo_client: AsyncMongoClient[Document]) -> AsyncIterator[AsyncDatabase[Document]]:
    name = f"perdure_test_{uuid.uuid4().hex[:12]}"
    yield mongo_client[name]
    await mongo_client.drop_database(name)


@pytest.fixture(scope="session")
async def rabbitmq_admin(endpoints: Endpoints) -> AsyncIterator[RabbitMQAdmin]:
    async with RabbitMQAdmin(endpoints.rabbitmq_management_url) as admin:
        yield admin


@pytest.fixture
async def vhost(rabbitmq_admin: RabbitMQAdmin, endpoints: Endpoints, unique_name: str) -> AsyncIterator[str]:
    """A fresh vhost on which the platform's admin user (from the AMQP URL) has full rights."""
    from urllib.parse import urlsplit

    admin_user = urlsplit(endpoints.rabbitmq_url).username or "guest"
    await rabbitmq_admin.create_vhost(unique_name)
    await rabbitmq_admin.set_permissions(unique_name, admin_user)
    yield unique_name
    await rabbitmq_admin.delete_vhost(unique_name)


def amqp_url(
    endpoints: Endpoints, *, vhost: str, user: str | None = None, password: str | None = None
) -> str:
    """The AMQP URL of ``endpoints`` moved to another vhost and, optionally, other credentials."""
    from urllib.parse import quote, urlsplit

    parts = urlsplit(endpoints.rabbitmq_url)
    user = user if user is not None else parts.username or "guest"
    password = password if password is not None else parts.password or "guest"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5672}"
    return f"{parts.scheme}://{netloc}/{quote(vhost, safe='')}"


@pytest.fixture
async def amqp_channel(endpoints: Endpoints, vhost: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel with publisher confirms on the test's own vhost."""
    connection = await aio_pika.connect(amqp_url(endpoints, vhost=vhost))
    channel = await connection.channel(publisher_confirms=True)
    yield channel
    await connection.close()
