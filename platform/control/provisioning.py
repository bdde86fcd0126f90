"""Creating a cell (topics, indexes, record) and a namespace on it (record, vhost, queues, the
namespace's RabbitMQ user and API key), in idempotent steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import aio_pika
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from perdure.infra.rabbitmq_admin import rabbitmq_admin
from perdure.infra.settings import Settings
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
from perdure.platform.sandboxing.app_manifest import read_manifest
from perdure.platform.sandboxing.sandbox import Sandbox
from perdure.platform.stores.control_store import (
    CellRecord,
    ControlError,
    ControlStore,
    Hosting,
    NamespaceRecord,
    check_name,
)
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.api_keys import issue_key
from perdure.platform.tenancy.model import Quota
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url, tenant_user


async def create_cell(
    settings: Settings, name: str, partitions: int, capacity: float = 1_000.0
) -> CellRecord:
    record = CellRecord.new(name, partitions, settings.cell_database(name), capacity)
    admin = AIOKafkaAdminClient(**settings.endpoints(name).kafka())
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


async def create_namespace(
    settings: Settings, name: str, app: str, cell: str, quota: Quota | None = None
) -> NamespaceRecord:
    """A namespace for ops (no account); see ``provision_namespace`` for tenants."""
    return (await provision_namespace(settings, name, app, cell=cell, quota=quota)).record


async def provision_namespace(
    settings: Settings,
    name: str,
    app: str,
    *,
    cell: str | None = None,
    account: str | None = None,
    quota: Quota | None = None,
    retention_days: int = 30,
    hosting: Hosting = "platform",
) -> ProvisionedNamespace:
    """Create a namespace (idempotent: a second call changes nothing and shows no key)."""
    check_name("namespace", name)
    # Refuse an app that does not load before anything is made (its code runs in its sandbox).
    sandbox = Sandbox.for_namespace(settings, name, quota or Quota(), "provisioning")
    manifest = await read_manifest(app, isolated_as=sandbox)
    databases = Databases.connect(settings, cell)
    try:
        control = databases.control
        try:
            existing: NamespaceRecord | None = await control.get_namespace(name)
        except ControlError:
            existing = None
        if existing is not None:
            if (existing.app, existing.account) != (app, account) or (cell and cell != existing.cell):
                raise ControlError(
                    f"namespace {name!r} exists (account {existing.account!r}, cell {existing.cell!r}, "
                    f"app {existing.app!r})"
                )
            await provision_vhost(settings, existing.cell, existing.vhost)
            return ProvisionedNamespace(existing, None, None)
        if account is not None:
            await TenancyStore(databases.control_db).get_account(account)
        placed = cell or await place(
            control, (quota or Quota()).actions_per_second, settings.system_namespace
        )
        await control.get_cell(placed)
        key = issue_key()
        record = NamespaceRecord(
            name=name,
            app=app,
            workflow_types=manifest.workflow_types,
            hosting=hosting,
            cell=placed,
            vhost=name,
            created_at=datetime.now(UTC),
            account=account,
            quota=quota or Quota(),
            retention_days=retention_days,
            rabbitmq_user=tenant_user(name),
            api_key_id=key.key_id,
            api_key_hash=key.hash,
        )
        await provision_vhost(settings, placed, record.vhost)
        await provision_tenant_user(settings, record, key.secret)
        record = await control.add_namespace(record)
        return ProvisionedNamespace(record, key.secret, connection_string(settings, record, key.secret))
    finally:
        await databases.close()


async def rotate_key(settings: Settings, name: str) -> ProvisionedNamespace:
    """Issue a new API key; the old one stops working at once (its broker connections are refused)."""
    databases = Databases.connect(settings)
    try:
        record = await databases.control.get_namespace(name)
        key = issue_key()
        # Deleting the user makes the broker close every connection it has open, at once; a password
        # change alone would leave them running.
        async with rabbitmq_admin(settings, record.cell) as admin:
            await admin.delete_user(record.rabbitmq_user or tenant_user(name))
        await provision_tenant_user(settings, record, key.secret)
        record = await databases.control.update_namespace(name, api_key_id=key.key_id, api_key_hash=key.hash)
        return ProvisionedNamespace(record, key.secret, connection_string(settings, record, key.secret))
    finally:
        await databases.close()


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
    settings: Settings,
    record: NamespaceRecord,
    api_key: str | None = None,
    *,
    password_hash: str | None = None,
) -> None:
    """The namespace's own broker user, whose password is the API key (given, or as its broker hash):
    it may publish to ingress and worker reports, use the reply and sticky queues it declares, consume
    the namespace's work queues (as its workers do), and reach nothing else, in no other vhost."""
    user = record.rabbitmq_user or tenant_user(record.name)
    async with rabbitmq_admin(settings, record.cell) as admin:
        if password_hash is not None:
            await admin.create_user_from_hash(user, password_hash)
        else:
            assert api_key is not None, "the key or its hash"
            await admin.create_user(user, api_key)
        await admin.set_permissions(record.vhost, user, **namespace_user_permissions())


async def provision_vhost(settings: Settings, cell: str, vhost: str) -> None:
    platform_user = urlsplit(settings.endpoints(cell).rabbitmq_url).username or "guest"
    async with rabbitmq_admin(settings, cell) as admin:
        await admin.create_vhost(vhost)
        await admin.set_permissions(vhost, platform_user)
        await admin.set_policy(
            vhost,
            "dead-letters",
            f"^({ACTIVITIES_QUEUE}|{INGRESS_QUEUE}|{WORKFLOW_TASKS_QUEUE}|{WORKER_REPORTS_QUEUE})$",
            {"dead-letter-exchange": DEAD_LETTER_EXCHANGE},
        )
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
