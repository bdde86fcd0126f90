"""Running the console in a test: the real app served by uvicorn on a free port of this host, against the
test's own databases and cell, and signed-in HTTP clients of it."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from starlette.applications import Starlette

from perdure.infra.settings import Settings
from perdure.platform.console.console_app import build_console
from perdure.platform.console.signin_limits import SigninLimits
from perdure.platform.stores.console_credentials import ConsoleCredentials
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.model import Role

PASSWORD = "a-long-test-password"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ConsoleUnderTest:
    settings: Settings
    url: str
    app: Starlette | None = None  # None when the console runs in another process

    def forget_signin_limits(self) -> None:
        """A fresh start for the process's per-address sign-in limits (every test client is 127.0.0.1)."""
        assert self.app is not None
        self.app.state.signin_limits = SigninLimits()

    async def add_user(self, account: str, email: str, role: Role, password: str = PASSWORD) -> None:
        databases = Databases.connect(self.settings)
        try:
            await TenancyStore(databases.control_db).create_account(account)
            await TenancyStore(databases.control_db).add_user(email, account, role)
            credentials = ConsoleCredentials(databases.control_db)
            await credentials.ensure_indexes()
            await credentials.set_user_password(account, email, password)
        finally:
            await databases.close()

    async def add_operator(self, email: str, password: str = PASSWORD) -> None:
        databases = Databases.connect(self.settings)
        try:
            await ConsoleCredentials(databases.control_db).add_operator(email, password)
        finally:
            await databases.close()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, follow_redirects=False, timeout=30)

    async def signed_in(self, email: str, password: str = PASSWORD) -> SignedIn:
        client = self.client()
        form = await client.get("/signin")
        response = await client.post(
            "/signin", data={"email": email, "password": password, "csrf_token": token_of(form.text)}
        )
        assert response.status_code == 303, f"sign-in of {email} answered {response.status_code}"
        return SignedIn(client)


def token_of(html: str) -> str:
    match = _TOKEN.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


@dataclass
class SignedIn:
    """A browser-like client with a live session: posts carry the CSRF token of the page they came from."""

    http: httpx.AsyncClient

    async def get(self, path: str, **options: object) -> httpx.Response:
        return await self.http.get(path, **options)  # type: ignore[arg-type]

    async def post_from(self, page: str, action: str, data: dict[str, str]) -> httpx.Response:
        """Post ``data`` to ``action`` with the CSRF token of ``page`` (as its form would)."""
        shown = await self.http.get(page)
        assert shown.status_code == 200, f"{page} answered {shown.status_code}"
        return await self.http.post(action, data={**data, "csrf_token": token_of(shown.text)})

    async def aclose(self) -> None:
        await self.http.aclose()


@asynccontextmanager
async def running_console(settings: Settings) -> AsyncIterator[ConsoleUnderTest]:
    port = free_port()
    app = build_console(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises why it could not start
        await asyncio.sleep(0.02)
    try:
        yield ConsoleUnderTest(settings, f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await serving
