"""What the console holds while it runs: connections only (its state lives in the control database)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from itsdangerous import URLSafeSerializer
from markupsafe import Markup
from starlette.templating import Jinja2Templates

from perdure.infra.settings import Settings
from perdure.platform.console.access import Permission
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.messaging.task_producer import new_producer
from perdure.platform.stores.audit_log import AuditLog
from perdure.platform.stores.console_credentials import ConsoleCredentials
from perdure.platform.stores.console_sessions import ConsoleSessions
from perdure.platform.stores.control_store import NamespaceRecord
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def console_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.globals["Permission"] = Permission
    templates.env.globals["csrf_input"] = csrf_input
    return templates


def csrf_input(page: Any) -> Markup:
    """The hidden field every form of a signed-in page carries (its session's CSRF token)."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(page.session.csrf_token)


@dataclass
class ConsoleResources:
    settings: Settings
    databases: Databases
    credentials: ConsoleCredentials
    sessions: ConsoleSessions
    audit: AuditLog
    tenancy: TenancyStore
    cookies: URLSafeSerializer
    templates: Jinja2Templates
    _producers: dict[str, AIOKafkaProducer] = field(default_factory=dict)
    _producer_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    async def open(cls, settings: Settings) -> ConsoleResources:
        databases = Databases.connect(settings)
        control_db = databases.control_db
        credentials = ConsoleCredentials(control_db)
        sessions = ConsoleSessions(control_db)
        audit = AuditLog(control_db)
        tenancy = TenancyStore(control_db)
        for store in (credentials, sessions, audit, tenancy):
            await store.ensure_indexes()
        secret = await sessions.cookie_secret()
        return cls(
            settings=settings,
            databases=databases,
            credentials=credentials,
            sessions=sessions,
            audit=audit,
            tenancy=tenancy,
            cookies=URLSafeSerializer(secret, salt="perdure-console-session"),
            templates=console_templates(),
        )

    async def ops(self, namespace: NamespaceRecord) -> OpsClient:
        """An ops client of the namespace on its cell's producer (one producer per cell, kept open);
        the console never closes it: ``close`` stops the producers."""
        async with self._producer_lock:
            producer = self._producers.get(namespace.cell)
            if producer is None:
                producer = new_producer(self.settings.endpoints(namespace.cell))
                await producer.start()
                self._producers[namespace.cell] = producer
        return OpsClient(self.settings, self.databases, namespace, producer)

    async def close(self) -> None:
        for producer in self._producers.values():
            await producer.stop()
        self._producers.clear()
        await self.databases.close()
