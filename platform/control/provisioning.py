"""Cells, and what a namespace is made of on its cell's broker: creating a cell (topics, indexes,
record); placing a namespace; its vhost (queues, dead letters, results) and its broker user, in
idempotent steps; its connection string; rotating its key. The steps of provisioning a namespace that
use these are ``provisioning_activities``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aio_pika

from perdure.infra.kafka_topics import ensure_topic
from perdure.infra.settings import Settings
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.placement import CellLoad, choose_cell
from perdure.platform.protocol.vhost_layout import (
    ACTIVITIES_DEAD_LETTERS,
    ACTIVITIES_QUEUE,
    DEAD_LETTER_EXCHANGE,
    INGRESS_DEAD_LETTERS,
    INGRESS_QUEUE,
    RESULTS_EXCHANGE,
    WORKER_REPORTS_DEAD_LETTERS,
    WORKER_REPORTS_QUEUE,
    WORKFLOW_TASKS_DEAD_LETTERS,
    WORKFLOW_TASKS_QUEUE,
    namespace_user_permissions,
)
from perdure.platform.stores.control_store import CellRecord, ControlError, ControlStore, NamespaceRecord
from perdure.platform.tenancy.api_keys import broker_password_hash, issue_key
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url, tenant_user


async def create_cell(
    settings: Settings, name: str, partitions: int, capacity: float = 1_000.0
) -> CellRecord:
    record = CellRecord.new(name, partitions, settings.cell_database(name), capacity)
    async with ControlResources(settings) as resources:
        admin = await resources.kafka_admin(name)
        for topic, count in ((record.topic, partitions), (record.dlq_topic, 1)):
            existing = await ensure_topic(admin, topic, count)
            if existing != count:
                raise ControlError(f"topic {topic} exists with {existing} partitions, not {count}")
        await resources.control.ensure_indexes()
        await resources.runs(name).ensure_indexes()
        return await resources.control.add_cell(record)


@dataclass(frozen=True)
class ProvisionedNamespace:
    record: NamespaceRecord
    # Only when this call created the namespace: the key is shown once and never stored.
    api_key: str | None
    connection_string: str | None


def connection_string(settings: Settings, record: NamespaceRecord, api_key: str) -> str:
    """What a tenant app connects with: the namespace's vhost, as its own user, with its API key."""
    parts = urlsplit(settings.endpoints(record.cell).rabbitmq_url)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    user = quote(record.rabbitmq_user or tenant_user(record.name), safe="")
    return f"{parts.scheme}://{user}:{quote(api_key, safe='')}@{host}{port}/{quote(record.vhost, safe='')}"


async def rotate_key(settings: Settings, name: str) -> ProvisionedNamespace:
    """Issue a new API key; the old one stops working at once (its broker connections are refused)."""
    async with ControlResources(settings) as resources:
        record = await resources.control.get_namespace(name)
        key = issue_key()
        # Deleting the user makes the broker close every connection it has open, at once; a password
        # change alone would leave them running.
        await resources.broker(record.cell).delete_user(record.rabbitmq_user or tenant_user(name))
        await provision_tenant_user(resources, record, broker_password_hash(key.secret))
        record = await resources.control.update_namespace(name, api_key_id=key.key_id, api_key_hash=key.hash)
        return ProvisionedNamespace(record, key.secret, connection_string(settings, record, key.secret))


async def place(control: ControlStore, demand: float, system_namespace: str) -> str:
    """The cell for a new namespace of ``demand`` actions/s (see ``placement``); the system namespace
    is the platform's own overhead, not a tenant's load."""
    loads = [
        CellLoad(
            cell.name,
            cell.capacity,
            sum(
                n.quota.actions_per_second
                for n in await control.namespaces_of(cell.name)
                if n.name != system_namespace
            ),
            cell.healthy,
        )
        for cell in await control.list_cells()
    ]
    return choose_cell(loads, demand)


async def provision_tenant_user(
    resources: ControlResources, record: NamespaceRecord, password_hash: str
) -> None:
    """The namespace's own broker user, whose password is the API key (given as its broker hash, so the
    key passes through nothing that records it): it may publish to ingress and worker reports, use the
    reply and sticky queues it declares, consume the namespace's work queues (as its workers do), and
    reach nothing else, in no other vhost."""
    user = record.rabbitmq_user or tenant_user(record.name)
    broker = resources.broker(record.cell)
    await broker.create_user_from_hash(user, password_hash)
    await broker.set_permissions(record.vhost, user, **namespace_user_permissions())


async def provision_vhost(resources: ControlResources, cell: str, vhost: str) -> None:
    """The namespace's vhost: the platform's user on it, its queues with their dead letters (by
    policy), and its results exchange."""
    settings = resources.settings
    platform_user = urlsplit(settings.endpoints(cell).rabbitmq_url).username or "guest"
    broker = resources.broker(cell)
    await broker.create_vhost(vhost)
    await broker.set_permissions(vhost, platform_user)
    await broker.set_policy(
        vhost,
        "dead-letters",
        f"^({ACTIVITIES_QUEUE}|{INGRESS_QUEUE}|{WORKFLOW_TASKS_QUEUE}|{WORKER_REPORTS_QUEUE})$",
        {"dead-letter-exchange": DEAD_LETTER_EXCHANGE},
    )
    # A connection of its own: the vhost is new, and what is declared on it is declared once.
    connection = await aio_pika.connect(namespace_amqp_url(settings, cell, vhost))
    try:
        channel = await connection.channel()
        dead_letters = await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        for queue, parking in (
            (ACTIVITIES_QUEUE, ACTIVITIES_DEAD_LETTERS),
            (INGRESS_QUEUE, INGRESS_DEAD_LETTERS),
            (WORKFLOW_TASKS_QUEUE, WORKFLOW_TASKS_DEAD_LETTERS),
            (WORKER_REPORTS_QUEUE, WORKER_REPORTS_DEAD_LETTERS),
        ):
            parked = await channel.declare_queue(parking, durable=True)
            await parked.bind(dead_letters, routing_key=queue)
            await channel.declare_queue(queue, durable=True)
        await channel.declare_exchange(RESULTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    finally:
        await connection.close()
