"""The steps of provisioning a namespace, as activities of the control plane (methods of
``ProvisioningActivities``, which holds the connections they share). Each is idempotent (a retry after a
crash redoes nothing twice) and refuses for good, non-retryable, what no retry can fix (an unknown
account, a name taken, no cell with room). The key never passes through here: only its hashes do, so
the workflow's history holds no secret. The order they run in is ``provisioning_workflow``'s."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
from pydantic import BaseModel

from perdure.platform.control.control_app import control_app
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.placement import PlacementError
from perdure.platform.control.provisioning import place, provision_tenant_user, provision_vhost
from perdure.platform.control.twin_requests import start_twins_through
from perdure.platform.core.outbox import RunClosed, close_routing_key
from perdure.platform.core.payloads import default_converter
from perdure.platform.protocol.ingress_wire import CANARY_WORKFLOW, IngressReply, StartRequest
from perdure.platform.protocol.vhost_layout import INGRESS_QUEUE, RESULTS_EXCHANGE
from perdure.platform.sandboxing.app_manifest import read_manifest
from perdure.platform.sandboxing.sandbox import Sandbox
from perdure.platform.stores.control_store import ControlError, Hosting, NamespaceRecord, check_name
from perdure.platform.tenancy.model import Member, Quota
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url, tenant_user
from perdure.tenants import ApplicationError
from perdure.tenants.app_loader import AppLoadError

CANARY_TIMEOUT = 60.0


class NamespaceSpec(BaseModel):
    """What `perdure namespace create` asks for (the key only as its hashes)."""

    name: str
    app: str
    account: str | None = None
    cell: str | None = None
    quota: Quota = Quota()
    retention_days: int = 30
    hosting: Hosting = "platform"
    api_key_id: str
    api_key_hash: str
    broker_password_hash: str


def _for_good(exc: Exception) -> ApplicationError:
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


class ProvisioningActivities:
    """Provisioning's steps and their compensations, on the process's control-plane connections."""

    def __init__(self, resources: ControlResources) -> None:
        self.resources = resources

    @control_app.activity
    async def place_namespace(self, spec: NamespaceSpec) -> str:
        control = self.resources.control
        try:
            return (await control.get_namespace(spec.name)).cell  # placed by an earlier attempt
        except ControlError:
            pass
        try:
            if spec.cell is not None:
                return (await control.get_cell(spec.cell)).name
            return await place(
                control, spec.quota.actions_per_second, self.resources.settings.system_namespace
            )
        except (ControlError, PlacementError) as exc:
            raise _for_good(exc) from None

    @control_app.activity
    async def record_namespace(self, spec: NamespaceSpec, cell: str) -> None:
        """The namespace's record, ``provisioning``, with the account's people as its members."""
        control, tenancy = self.resources.control, self.resources.tenancy
        try:
            check_name("namespace", spec.name)
            sandbox = Sandbox.for_namespace(self.resources.settings, spec.name, spec.quota, "provisioning")
            manifest = await read_manifest(spec.app, isolated_as=sandbox)
            members: list[Member] = []
            if spec.account is not None:
                await tenancy.get_account(spec.account)
                members = [Member(email=u.email, role=u.role) for u in await tenancy.users_of(spec.account)]
            record = NamespaceRecord(
                name=spec.name,
                app=spec.app,
                workflow_types=manifest.workflow_types,
                hosting=spec.hosting,
                cell=cell,
                vhost=spec.name,
                created_at=datetime.now(UTC),
                account=spec.account,
                quota=spec.quota,
                retention_days=spec.retention_days,
                rabbitmq_user=tenant_user(spec.name),
                api_key_id=spec.api_key_id,
                api_key_hash=spec.api_key_hash,
                status="provisioning",
                members=members,
            )
            existing = await control.add_namespace(record)
        except (ControlError, AppLoadError) as exc:
            raise _for_good(exc) from None
        if existing.api_key_id != spec.api_key_id:  # somebody else's namespace of that name
            raise _for_good(ControlError(f"namespace {spec.name!r} exists already"))

    @control_app.activity
    async def provision_infrastructure(self, name: str, broker_password_hash: str) -> None:
        """Vhost, queues and policies; the namespace's broker user; the cell database's indexes; the
        cell topic checked. Then the namespace is served (``validating``), for the canary."""
        control = self.resources.control
        record = await control.get_namespace(name)
        cell = await control.get_cell(record.cell)
        await provision_vhost(self.resources, record.cell, record.vhost)
        if not await self.resources.broker(record.cell).user_exists(
            record.rabbitmq_user or tenant_user(name)
        ):
            await provision_tenant_user(self.resources, record, broker_password_hash)
        await self.resources.runs(record.cell).ensure_indexes()
        await self._check_topic(record.cell, cell.topic, cell.partitions)
        if record.status == "provisioning":
            await control.update_namespace(name, status="validating")

    async def _check_topic(self, cell: str, topic: str, partitions: int) -> None:
        admin = await self.resources.kafka_admin(cell)
        described = await admin.describe_topics([topic])
        found = described[0] if described else {}
        if found.get("error_code", 0) != 0 or len(found.get("partitions") or []) != partitions:
            raise _for_good(
                ControlError(f"the cell's topic {topic} is missing or has not {partitions} partitions")
            )

    @control_app.activity
    async def run_canary(self, name: str) -> str:
        """Start the canary through the namespace's ingress and wait for its result on its results
        exchange (on a connection of its own: the namespace's path is what it tries)."""
        record = await self.resources.control.get_namespace(name)
        token = uuid.uuid4().hex
        workflow_id = f"perdure-canary-{token}"
        connection = await aio_pika.connect(
            namespace_amqp_url(self.resources.settings, record.cell, record.vhost)
        )
        try:
            channel = await connection.channel(publisher_confirms=True)
            replies = await channel.declare_queue(exclusive=True)
            await replies.bind(await channel.get_exchange(RESULTS_EXCHANGE), close_routing_key(workflow_id))
            answers: asyncio.Queue[Any] = asyncio.Queue()
            await replies.consume(answers.put, no_ack=True)
            request = StartRequest(
                request_id=token,
                workflow_type=CANARY_WORKFLOW,
                workflow_id=workflow_id,
                input=default_converter.to_payloads([token], "canary input"),
            )
            await channel.default_exchange.publish(
                aio_pika.Message(
                    request.model_dump_json().encode(), reply_to=replies.name, correlation_id=token
                ),
                routing_key=INGRESS_QUEUE,
            )
            async with asyncio.timeout(CANARY_TIMEOUT):
                while True:
                    message = await answers.get()
                    if message.correlation_id == token:
                        reply = IngressReply.model_validate_json(message.body)
                        if not reply.ok:
                            raise ApplicationError(
                                f"the canary was refused: {reply.error}", type="CanaryRefused"
                            )
                        continue
                    closed = RunClosed.model_validate_json(message.body)
                    value = default_converter.from_payload(closed.result) if closed.result else None
                    if closed.status != "completed" or value != f"{token}:ok":
                        raise ApplicationError(
                            f"the canary ended {closed.status}: {value!r}", type="CanaryFailed"
                        )
                    return workflow_id
        finally:
            await connection.close()

    @control_app.activity
    async def activate_namespace(self, name: str) -> None:
        await self.resources.control.update_namespace(name, status="active")

    @control_app.activity
    async def start_namespace_twin(self, name: str) -> None:
        await start_twins_through(await self.resources.system_ops(), [("namespace", name)])

    @control_app.activity
    async def remove_infrastructure(self, name: str, cell: str) -> None:
        """Compensation: the namespace's vhost (with its queues) and broker user, if they exist."""
        broker = self.resources.broker(cell)
        if await broker.vhost_exists(name):
            await broker.delete_vhost(name)
        if await broker.user_exists(tenant_user(name)):
            await broker.delete_user(tenant_user(name))

    @control_app.activity
    async def remove_record(self, name: str, api_key_id: str) -> None:
        """Compensation: the record this provisioning made (never another one of the same name)."""
        control = self.resources.control
        try:
            record = await control.get_namespace(name)
        except ControlError:
            return
        if record.api_key_id == api_key_id:
            await control.delete_namespace(name)
