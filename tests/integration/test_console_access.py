"""Who may do what in the console, on the real stack: roles enforced on the server, accounts kept
apart, sign-in throttled, sessions that end when their user signs out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.stores.console_credentials import ConsoleCredentials
from perdure.platform.stores.console_sessions import FAILURE_WINDOW, FREE_FAILURES, ConsoleSessions
from perdure.platform.stores.databases import Databases
from perdure.platform.tenancy.model import Quota

from .cell_harness import TenantCell, completed_activities, eventually
from .conftest import TenantCellFactory
from .console_harness import PASSWORD, ConsoleUnderTest, running_console, token_of

WRONG = "not-the-password-at-all"


async def gated_run(tenants: TenantCell, label: str, tmp_path: Path) -> str:
    """A run of namespace ``label`` waiting on a signal."""
    workflow_id = f"gated-{uuid.uuid4().hex[:8]}"
    async with await OpsClient.connect(tenants.cell.settings, tenants.namespaces[label].record.name) as ops:
        await ops.start_workflow(
            "Gated", str(tmp_path / f"{workflow_id}.ledger"), workflow_id, id=workflow_id
        )

        async def waiting() -> None:
            described = await ops.describe(workflow_id)
            assert described["status"] == "running"
            assert await completed_activities(ops, workflow_id) == 2  # it waits on the signal now

        await eventually(waiting, timeout=60)
    return workflow_id


async def audit_entries(console: ConsoleUnderTest, **query: Any) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(console.settings.mongodb_uri, tz_aware=True)
    try:
        cursor = client[console.settings.control_database]["audit_log"].find(query)
        return [d async for d in cursor]
    finally:
        await client.close()


async def test_roles_accounts_and_refusals(make_tenant_cell: TenantCellFactory, tmp_path: Path) -> None:
    tenants = await make_tenant_cell({"a": Quota.unthrottled(), "b": Quota.unthrottled()})
    a, b = tenants.a.record.name, tenants.b.record.name
    workflow_a = await gated_run(tenants, "a", tmp_path)
    workflow_b = await gated_run(tenants, "b", tmp_path)
    async with running_console(tenants.cell.settings) as console:
        await console.add_user("acct-a", "reader@a.example.com", "read-only")
        await console.add_user("acct-a", "dev@a.example.com", "developer")
        reader = await console.signed_in("reader@a.example.com")
        developer = await console.signed_in("dev@a.example.com")
        run_page = f"/namespaces/{a}/workflows/{workflow_a}"

        # A read-only user sees the run, but no button that acts on it.
        shown = await reader.get(run_page)
        assert shown.status_code == 200
        assert workflow_a in shown.text
        assert "/terminate" not in shown.text and "Terminate" not in shown.text
        # The developer sees the terminate form.
        assert "/terminate" in (await developer.get(run_page)).text

        # A forged terminate (with the reader's own valid CSRF token) is refused and audited.
        forged = await reader.post_from(run_page, f"{run_page}/terminate", {"reason": "forged"})
        assert forged.status_code == 403
        refused = await audit_entries(console, actor="acct-a/reader@a.example.com", outcome="refused")
        assert [e["action"] for e in refused] == ["workflow.terminate"]
        assert refused[0]["namespace"] == a and refused[0]["target"] == workflow_a
        async with await OpsClient.connect(tenants.cell.settings, a) as ops:
            assert (await ops.describe(workflow_a))["status"] == "running"

        # Account b's namespace and run are not there for a's developer: answered as a made-up name is.
        made_up = await developer.get("/namespaces/no-such-namespace")
        for path in (
            f"/namespaces/{b}",
            f"/namespaces/{b}/workflows",
            f"/namespaces/{b}/workflows/{workflow_b}",
        ):
            response = await developer.get(path)
            assert response.status_code == 404, path
            assert response.text == made_up.text.replace("no-such-namespace", b)
            assert b not in response.text.replace(path, "")
        listed = await developer.get("/namespaces")
        assert a in listed.text and b not in listed.text
        # Nor can a's developer act on b's run by posting to its URL.
        posted = await developer.post_from(
            run_page, f"/namespaces/{b}/workflows/{workflow_b}/terminate", {"reason": "x"}
        )
        assert posted.status_code == 404
        async with await OpsClient.connect(tenants.cell.settings, b) as ops:
            assert (await ops.describe(workflow_b))["status"] == "running"

        # A post without the CSRF token is refused, audited, and does nothing.
        tokenless = await developer.http.post(f"{run_page}/terminate", data={"reason": "no token"})
        assert tokenless.status_code == 403
        assert "security token" in tokenless.text
        assert await audit_entries(
            console, actor="acct-a/dev@a.example.com", outcome="refused", action="workflow.terminate"
        )
        async with await OpsClient.connect(tenants.cell.settings, a) as ops:
            assert (await ops.describe(workflow_a))["status"] == "running"

        # Operators are not account users: the account's pages are not theirs, the platform's are.
        await console.add_operator("ops@platform.example.com")
        operator = await console.signed_in("ops@platform.example.com")
        assert (await operator.get(f"/namespaces/{a}")).status_code == 404
        assert (await developer.get("/operators/cells")).status_code == 403
        for client in (reader, developer, operator):
            await client.aclose()


async def test_sign_in_is_throttled_and_sessions_end(make_tenant_cell: TenantCellFactory) -> None:
    tenants = await make_tenant_cell({"a": Quota()}, start=False)
    async with running_console(tenants.cell.settings) as console:
        await console.add_user("acct-a", "owner@a.example.com", "owner")
        await console.add_user("acct-a", "other@a.example.com", "developer")

        # The session cookie: signed, HttpOnly, SameSite.
        async with console.client() as browser:
            form = await browser.get("/signin")
            signed = await browser.post(
                "/signin",
                data={
                    "email": "owner@a.example.com",
                    "password": PASSWORD,
                    "csrf_token": token_of(form.text),
                },
            )
            cookie = signed.headers["set-cookie"]
            assert "perdure_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie

        # Five wrong passwords, then even the right one waits.
        async with console.client() as guesser:
            statuses = []
            for _ in range(5):
                form = await guesser.get("/signin")
                answer = await guesser.post(
                    "/signin",
                    data={
                        "email": "owner@a.example.com",
                        "password": WRONG,
                        "csrf_token": token_of(form.text),
                    },
                )
                statuses.append(answer.status_code)
            assert statuses == [401, 401, 401, 401, 429]
            assert "try again in" in answer.text
            form = await guesser.get("/signin")
            right = await guesser.post(
                "/signin",
                data={
                    "email": "owner@a.example.com",
                    "password": PASSWORD,
                    "csrf_token": token_of(form.text),
                },
            )
            assert right.status_code == 429
            assert int(right.headers["retry-after"]) > 0
        # An unknown e-mail is refused like a wrong password.
        async with console.client() as stranger:
            form = await stranger.get("/signin")
            unknown = await stranger.post(
                "/signin",
                data={"email": "nobody@a.example.com", "password": WRONG, "csrf_token": token_of(form.text)},
            )
            assert unknown.status_code == 401 and "Wrong e-mail or password" in unknown.text
            # A sign-in without the form's token does nothing.
            tokenless = await stranger.post(
                "/signin", data={"email": "other@a.example.com", "password": PASSWORD}
            )
            assert tokenless.status_code == 403
            assert "perdure_session" not in tokenless.headers.get("set-cookie", "")

        # Another user's cookie, taken after they signed out, opens nothing.
        other = await console.signed_in("other@a.example.com")
        stolen = other.http.cookies.get("perdure_session")
        assert stolen is not None
        signed_out = await other.post_from("/namespaces", "/signout", {})
        assert signed_out.status_code == 303
        async with console.client() as thief:
            thief.cookies.set("perdure_session", stolen)
            replay = await thief.get("/namespaces")
            assert replay.status_code == 401
            assert "Sign in" in replay.text
        await other.aclose()

        # An expired session is answered with the sign-in page and says why.
        expiring = await console.signed_in("other@a.example.com")
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            console.settings.mongodb_uri, tz_aware=True
        )
        try:
            await client[console.settings.control_database]["console_sessions"].update_many(
                {"identity_key": "acct-a/other@a.example.com"},
                {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
            )
        finally:
            await client.close()
        expired = await expiring.get("/namespaces")
        assert expired.status_code == 401
        assert "expired" in expired.text
        await expiring.aclose()


async def test_parallel_attempts_in_one_millisecond_reserve_five_and_no_more(
    make_tenant_cell: TenantCellFactory,
) -> None:
    settings = (await make_tenant_cell({"a": Quota()}, start=False)).cell.settings
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        sessions = ConsoleSessions(client[settings.control_database])
        now = datetime.now(UTC)
        # One instant for all: a refused attempt taking itself back must not take back another's.
        attempts = await asyncio.gather(
            *(sessions.reserve_attempt("Same@a.example.com", now) for _ in range(40))
        )
        assert sum(a.wait is None for a in attempts) == FREE_FAILURES
        assert sorted(a.number for a in attempts if a.wait is None) == list(range(1, FREE_FAILURES + 1))
        later = await sessions.reserve_attempt("same@a.example.com", now + timedelta(seconds=1))
        assert later.wait is not None and later.number == FREE_FAILURES + 1
        # Past the window the old attempts are forgotten, and a long list is trimmed of them.
        fresh = await sessions.reserve_attempt(
            "same@a.example.com", now + FAILURE_WINDOW + timedelta(seconds=1)
        )
        assert fresh.wait is None and fresh.number == 1
        assert await sessions.failures.count_documents({"email": "same@a.example.com"}) == 1
    finally:
        await client.close()


async def test_sign_in_holds_against_parallel_guesses_big_bodies_and_bad_addresses(
    make_tenant_cell: TenantCellFactory,
) -> None:
    tenants = await make_tenant_cell({"a": Quota()}, start=False)
    async with running_console(tenants.cell.settings) as console:
        await console.add_user("acct-a", "target@a.example.com", "owner")

        # Forty wrong guesses at once: five are checked, the others wait out the lock; then even the
        # right password waits.
        async with console.client() as attacker:
            token = token_of((await attacker.get("/signin")).text)

            async def guess(password: str) -> int:
                answer = await attacker.post(
                    "/signin",
                    data={"email": "target@a.example.com", "password": password, "csrf_token": token},
                )
                return answer.status_code

            statuses = await asyncio.gather(*(guess(WRONG) for _ in range(40)))
            assert sorted(statuses) == [401] * 4 + [429] * 36, statuses
            assert await guess(PASSWORD) == 429
        checked = await audit_entries(console, actor="?/target@a.example.com", action="signin")
        assert len(checked) == 5, f"{len(checked)} wrong passwords were checked"
        console.forget_signin_limits()

        async with console.client() as stranger:
            token = token_of((await stranger.get("/signin")).text)

            # A body past the sign-in limit is refused as it arrives, chunked (no declared length) or not.
            async def chunks() -> AsyncIterator[bytes]:
                yield f"csrf_token={token}&email=x%40a.example.com&password=".encode()
                for _ in range(64):
                    yield b"p" * 65_536

            chunked = await stranger.post(
                "/signin", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
            )
            assert chunked.status_code == 413
            # Not an address: refused before it reaches the database.
            for email in ("no-at-sign", "a" * 300 + "@a.example.com", "two@@a.example.com"):
                token = token_of((await stranger.get("/signin")).text)
                bad = await stranger.post(
                    "/signin", data={"email": email, "password": WRONG, "csrf_token": token}
                )
                assert bad.status_code == 400 and "valid e-mail" in bad.text, email

        # A password reset ends every session of its user.
        await console.add_user("acct-a", "other@a.example.com", "owner")
        signed_in = await console.signed_in("other@a.example.com")
        email = "other@a.example.com"
        assert (await signed_in.get("/namespaces")).status_code == 200
        databases = Databases.connect(console.settings)
        try:
            await ConsoleCredentials(databases.control_db).set_user_password(
                "acct-a", email, "a-brand-new-password"
            )
        finally:
            await databases.close()
        assert (await signed_in.get("/namespaces")).status_code == 401
        await signed_in.aclose()
