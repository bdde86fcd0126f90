"""What the console holds while it runs: connections only (its state lives in the control database),
and the count of its open live streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aio_pika.exceptions import AMQPError
from itsdangerous import URLSafeSerializer
from markupsafe import Markup
from starlette.templating import Jinja2Templates

from perdure.infra.settings import Settings
from perdure.platform.console.access import Permission
from perdure.platform.core.payloads import DataConverter
from perdure.platform.stores.audit_log import AuditLog
from perdure.platform.stores.console_credentials import ConsoleCredentials
from perdure.platform.stores.console_sessions import ConsoleSessions
from perdure.platform.stores.control_store import NamespaceRecord
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url
from perdure.tenants.client import Client
from perdure.tenants.client_errors import AuthenticationError, ServiceUnavailableError

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# The longest a console action waits for admission (its turn in the namespace's fair queue, and the
# engine's answer for a start or a query) before the page says so: a browser is waiting on it.
ADMISSION_WAIT_SECONDS = 20.0
# Opening the namespace's vhost: the first connect fails fast, but a host that drops packets would hold
# the lock below (and every other namespace's first action) as long as TCP waits.
CONNECT_SECONDS = 10.0
# The client's own payload check is not the namespace's: the console checks that limit itself (with a
# message naming it) and admission checks it again; this only bounds what one form can carry.
CLIENT_PAYLOAD_BYTES = 64 * 1024 * 1024
# Live streams: each one polls the run store twice a second for up to ten minutes, so a page left open
# in many tabs (or a script) is bounded per session, and the process's total is bounded too.
MAX_LIVE_STREAMS_PER_SESSION = 8
MAX_LIVE_STREAMS = 500


def console_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.globals["Permission"] = Permission
    templates.env.globals["csrf_input"] = csrf_input
    return templates


def csrf_input(page: Any) -> Markup:
    """The hidden field every form of a signed-in page carries (its session's CSRF token)."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(page.session.csrf_token)


class LiveStreamRefused(Exception):
    """Too many live streams are open (this session's, or the process's): answered 429."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class LiveStreamSlot:
    """One open live stream, counted until ``release`` (which may be called more than once: the stream's
    generator and its response both release, whichever ends first)."""

    streams: LiveStreams
    session_id: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.streams._release(self.session_id)


@dataclass
class LiveStreams:
    """The live streams this process holds open, per session and in all. Counted in the process only: a
    session served by several console processes behind a load balancer may hold this many on each."""

    per_session: int = MAX_LIVE_STREAMS_PER_SESSION
    total: int = MAX_LIVE_STREAMS
    _open: Counter[str] = field(default_factory=Counter)

    def open(self, session_id: str) -> LiveStreamSlot:
        # No await between the check and the count: the event loop cannot let another request in.
        if sum(self._open.values()) >= self.total:
            raise LiveStreamRefused(
                f"the console follows {self.total} runs live already: reload the page in a while"
            )
        if self._open[session_id] >= self.per_session:
            raise LiveStreamRefused(
                f"this session follows {self.per_session} runs live already: close some of their pages "
                "(or reload this one later)"
            )
        self._open[session_id] += 1
        return LiveStreamSlot(self, session_id)

    def held(self, session_id: str | None = None) -> int:
        return sum(self._open.values()) if session_id is None else self._open[session_id]

    def _release(self, session_id: str) -> None:
        self._open[session_id] -= 1
        if self._open[session_id] <= 0:
            del self._open[session_id]


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
    live_streams: LiveStreams = field(default_factory=LiveStreams)
    # One tenant client per namespace, by where it is reached: a namespace moved to another cell is on
    # another broker, so it gets a client of its own there.
    _clients: dict[tuple[str, str], Client] = field(default_factory=dict)
    _client_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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

    async def client(self, namespace: NamespaceRecord) -> Client:
        """The namespace's tenant client (kept open; ``close`` closes it): the console's actions go
        through the namespace's ingress and admission, as a tenant's do. It connects with the platform's
        own user on the namespace's vhost, which admission takes for the namespace, as it does a
        tenant's key. Raises ``ServiceUnavailableError`` when the broker cannot be reached."""
        key = (namespace.cell, namespace.vhost)
        stale: list[Client] = []
        async with self._client_lock:
            client = self._clients.get(key)
            if client is None:
                try:
                    async with asyncio.timeout(CONNECT_SECONDS):
                        client = await Client.connect(
                            namespace_amqp_url(self.settings, namespace.cell, namespace.vhost),
                            converter=DataConverter(max_payload_bytes=CLIENT_PAYLOAD_BYTES),
                            request_timeout=ADMISSION_WAIT_SECONDS,
                        )
                except (AMQPError, OSError, TimeoutError, AuthenticationError) as exc:
                    raise ServiceUnavailableError(
                        f"the console cannot reach namespace {namespace.name}'s broker: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                # The same vhost on another cell: the namespace was there before it moved.
                stale = [self._clients.pop(k) for k in list(self._clients) if k[1] == key[1]]
                self._clients[key] = client
        for old in stale:
            with contextlib.suppress(Exception):
                await old.close()
        return client

    async def close(self) -> None:
        async with self._client_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):  # closing the rest matters more than one broker's answer
                await client.close()
        await self.databases.close()
