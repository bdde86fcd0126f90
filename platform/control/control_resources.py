"""``ControlResources``: the settings and connections the control plane's activities share, one of each
per process, each opened on first use (the system namespace's app holds one: importing it, as reading
its manifest does, connects nothing and reads no settings)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.infra.settings import Settings, get_settings
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.messaging.task_producer import new_producer
from perdure.platform.stores.control_store import ControlStore
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.run_store import RunStore
from perdure.platform.stores.tenancy_store import TenancyStore


class ControlResources:
    """The control database, each cell's database and broker management API, each cell's Kafka admin,
    and an ops client of the system namespace (to start and signal its workflows). Cells that share a
    server share its client. ``settings`` None: the process's, read when first needed."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._databases: dict[str, Databases] = {}  # by MongoDB URI
        self._brokers: dict[str, RabbitMQAdmin] = {}  # by management URL
        self._kafka_admins: dict[str, AIOKafkaAdminClient] = {}  # by bootstrap servers
        self._ops: OpsClient | None = None
        self._opening = asyncio.Lock()  # what opens with an await is opened once, by one caller

    async def __aenter__(self) -> ControlResources:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    def _databases_at(self, cell: str | None) -> Databases:
        uri = self.settings.endpoints(cell).mongodb_uri
        if uri not in self._databases:
            self._databases[uri] = Databases.connect(self.settings, cell)
        return self._databases[uri]

    @property
    def control(self) -> ControlStore:
        """The control database (cells, namespaces, deployments), on the platform's own server."""
        return self._databases_at(None).control

    @property
    def tenancy(self) -> TenancyStore:
        return TenancyStore(self.control.db)

    def runs(self, cell: str) -> RunStore:
        """The cell's database, on the cell's server."""
        return self._databases_at(cell).runs(self.settings, cell)

    def broker(self, cell: str) -> RabbitMQAdmin:
        """The management API of the cell's broker."""
        url = self.settings.endpoints(cell).rabbitmq_management_url
        if url not in self._brokers:
            self._brokers[url] = RabbitMQAdmin(url)
        return self._brokers[url]

    async def kafka_admin(self, cell: str) -> AIOKafkaAdminClient:
        options: dict[str, Any] = self.settings.endpoints(cell).kafka()
        key = options["bootstrap_servers"]
        async with self._opening:
            if key not in self._kafka_admins:
                admin = AIOKafkaAdminClient(**options)
                await admin.start()
                self._kafka_admins[key] = admin
        return self._kafka_admins[key]

    async def system_ops(self) -> OpsClient:
        """An ops client of the system namespace, where the control plane's workflows run."""
        async with self._opening:
            if self._ops is None:
                databases = self._databases_at(None)
                record = await databases.control.get_namespace(self.settings.system_namespace)
                producer = new_producer(self.settings.endpoints(record.cell))
                await producer.start()
                self._ops = OpsClient(self.settings, databases, record, producer)
        return self._ops

    async def close(self) -> None:
        ops, self._ops = self._ops, None
        if ops is not None:
            await ops.tasks.producer.stop()  # its databases are among ours, closed below
        for admin in self._kafka_admins.values():
            await admin.close()
        for broker in self._brokers.values():
            await broker.close()
        for databases in self._databases.values():
            await databases.close()
        self._kafka_admins.clear()
        self._brokers.clear()
        self._databases.clear()
