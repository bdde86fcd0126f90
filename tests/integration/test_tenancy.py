"""Tenancy on the real broker: each namespace's key opens its own vhost and nothing else (invariant 7
of docs/architecture.md)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aio_pika.exceptions import InvalidFrameError, ProbableAuthenticationError
from aiormq.exceptions import ChannelAccessRefused
from pymongo import AsyncMongoClient

from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.infra.settings import Settings, load_settings
from perdure.platform.control.namespace_requests import provision_namespace
from perdure.platform.control.provisioning import ProvisionedNamespace, create_cell, rotate_key
from perdure.platform.protocol.vhost_layout import (
    ACTIVITIES_DEAD_LETTERS,
    ACTIVITIES_QUEUE,
    INGRESS_QUEUE,
    WORKER_REPORTS_DEAD_LETTERS,
    WORKER_REPORTS_QUEUE,
    WORKFLOW_TASKS_QUEUE,
)
from perdure.platform.stores.control_store import ControlError
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.api_keys import key_matches
from perdure.platform.tenancy.model import Quota
from perdure.platform.tenancy.namespace_urls import tenant_user
from perdure.tenants import AuthenticationError, Client

from ..service_endpoints import Endpoints
from .cell_harness import settings_env

APP = "tests.integration.cell_app:app"


@dataclass
class Tenants:
    settings: Settings
    a: ProvisionedNamespace
    b: ProvisionedNamespace


@pytest.fixture
async def tenants(
    endpoints: Endpoints, mongo_client: AsyncMongoClient[dict[str, Any]], rabbitmq_admin: RabbitMQAdmin
) -> AsyncIterator[Tenants]:
    suffix = uuid.uuid4().hex[:8]
    variables = settings_env(endpoints, f"t{suffix}")
    settings = load_settings(**{k.removeprefix("PERDURE_").lower(): v for k, v in variables.items()})
    await create_cell(settings, f"c-{suffix}", 2)
    databases = Databases.connect(settings)
    await TenancyStore(databases.control_db).create_account("acme")
    await TenancyStore(databases.control_db).create_account("globex")
    await databases.close()
    a = await provision_namespace(settings, f"a-{suffix}", APP, account="acme", quota=Quota(weight=2))
    b = await provision_namespace(settings, f"b-{suffix}", APP, account="globex")
    yield Tenants(settings, a, b)
    for provisioned in (a, b):
        await rabbitmq_admin.delete_vhost(provisioned.record.vhost)
        await rabbitmq_admin.delete_user(tenant_user(provisioned.record.name))
    await mongo_client.drop_database(settings.control_database)
    await mongo_client.drop_database(settings.cell_database(f"c-{suffix}"))


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    raise AssertionError("a tenant must never receive an activity task")


def _on_vhost(connection_string: str, vhost: str) -> str:
    parts = urlsplit(connection_string)
    return urlunsplit(parts._replace(path=f"/{vhost}"))


def _with_password(connection_string: str, password: str) -> str:
    parts = urlsplit(connection_string)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_a_namespace_key_opens_its_vhost_and_only_its_ingress(tenants: Tenants) -> None:
    assert tenants.a.connection_string is not None and tenants.a.api_key is not None
    record = tenants.a.record
    assert record.account == "acme" and record.quota.weight == 2
    assert record.api_key_hash is not None and key_matches(tenants.a.api_key, record.api_key_hash)
    assert tenants.a.api_key not in record.model_dump_json()  # only the hash is kept

    connection = await aio_pika.connect(tenants.a.connection_string)
    try:
        channel = await connection.channel()  # publisher confirms: a refused publish raises
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=INGRESS_QUEUE)
        replies = await channel.declare_queue(exclusive=True)  # its own reply queue is allowed
        assert replies.name.startswith("amq.gen-")
    finally:
        await connection.close()


async def test_a_key_is_refused_on_another_vhost_and_when_wrong(tenants: Tenants) -> None:
    assert tenants.a.connection_string is not None
    with pytest.raises(ProbableAuthenticationError):
        await aio_pika.connect(_with_password(tenants.a.connection_string, "pdk_0_wrong"))
    # The broker answers Connection.Open with Connection.Close (530 NOT_ALLOWED).
    with pytest.raises(InvalidFrameError, match=r"Connection\.Close"):
        await aio_pika.connect(_on_vhost(tenants.a.connection_string, tenants.b.record.vhost))


async def test_the_key_reads_its_work_queues_and_nothing_the_platform_reads(tenants: Tenants) -> None:
    """The key is its workers' credential: it consumes the namespace's work queues; what only the
    platform reads (requests to admission, workers' reports, dead letters) stays out of its reach, and
    it declares no queue but its own reply and sticky queues."""
    assert tenants.a.connection_string is not None
    connection = await aio_pika.connect(tenants.a.connection_string)
    try:
        for allowed in (ACTIVITIES_QUEUE, WORKFLOW_TASKS_QUEUE):
            channel = await connection.channel()
            queue = await channel.get_queue(allowed, ensure=False)
            await queue.cancel(await queue.consume(_ignore))
            await channel.close()
        for refused in (
            INGRESS_QUEUE,
            WORKER_REPORTS_QUEUE,
            ACTIVITIES_DEAD_LETTERS,
            WORKER_REPORTS_DEAD_LETTERS,
        ):
            channel = await connection.channel()
            with pytest.raises(ChannelAccessRefused):
                queue = await channel.get_queue(refused, ensure=False)
                await queue.consume(_ignore)
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            await channel.declare_queue("not-mine", auto_delete=True)
    finally:
        await connection.close()


async def test_a_rotated_key_is_refused_and_its_connections_closed(tenants: Tenants) -> None:
    assert tenants.a.connection_string is not None
    old = await aio_pika.connect(tenants.a.connection_string)
    closed_by_broker = asyncio.Event()
    old.close_callbacks.add(lambda *_: closed_by_broker.set())
    rotated = await rotate_key(tenants.settings, tenants.a.record.name)
    assert rotated.connection_string is not None and rotated.record.api_key_id != tenants.a.record.api_key_id
    with pytest.raises(ProbableAuthenticationError):
        await aio_pika.connect(tenants.a.connection_string)
    fresh = await aio_pika.connect(rotated.connection_string)
    await fresh.close()
    await asyncio.wait_for(closed_by_broker.wait(), 10)  # the connection opened with the old key


async def test_creating_again_shows_no_key_and_a_different_owner_is_refused(tenants: Tenants) -> None:
    again = await provision_namespace(tenants.settings, tenants.a.record.name, APP, account="acme")
    assert again.api_key is None and again.connection_string is None
    assert again.record.api_key_id == tenants.a.record.api_key_id
    with pytest.raises(ControlError, match="exists"):
        await provision_namespace(tenants.settings, tenants.a.record.name, APP, account="globex")


async def test_the_client_reports_a_refused_key_clearly(tenants: Tenants) -> None:
    assert tenants.a.connection_string is not None
    with pytest.raises(AuthenticationError, match="refused"):
        await Client.connect(_with_password(tenants.a.connection_string, "pdk_0_revoked"))
