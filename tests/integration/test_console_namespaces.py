"""The console's namespace and billing pages on the real stack: each account sees its own namespaces
only, usage charts show what metering counted, owners and admins change quotas and rotate keys (other
roles are refused and audited), and billing lists and serves the account's own exports only."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.exceptions import ProbableAuthenticationError
from pymongo import AsyncMongoClient

from perdure.billing.billing_export import export_period
from perdure.billing.metering_service import usage_store
from perdure.infra.settings import Settings
from perdure.platform.control.system_namespace import ensure_system_namespace
from perdure.platform.core.usage import UsageRecord, hour_of
from perdure.platform.stores.control_store import NamespaceRecord
from perdure.platform.stores.databases import Databases
from perdure.platform.tenancy.model import Quota

from .cell_harness import eventually, publish_usage, run_perdure
from .conftest import TenantCellFactory
from .console_harness import running_console

_SECRET = re.compile(r'<code class="secret" id="connection-string">([^<]+)</code>')


def usage(namespace: str, metric: str, count: int, at: datetime, quantity: int = 1) -> list[UsageRecord]:
    return [
        UsageRecord(
            id=f"{namespace}/{metric}/{at.isoformat()}/{i}",
            namespace=namespace,
            metric=metric,  # type: ignore[arg-type]
            quantity=quantity,
            at=at,
        )
        for i in range(count)
    ]


async def namespace_record(settings: Settings, name: str) -> NamespaceRecord:
    databases = Databases.connect(settings)
    try:
        return await databases.control.get_namespace(name)
    finally:
        await databases.close()


async def audit_entries(settings: Settings, **query: Any) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        return [d async for d in client[settings.control_database]["audit_log"].find(query)]
    finally:
        await client.close()


async def counted(settings: Settings, namespaces: list[str], start: datetime, total: int) -> None:
    """Waits until metering has counted ``total`` records' quantity for ``namespaces`` since ``start``."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        rows = await usage_store(client, settings).hourly(
            namespaces, start, datetime.now(UTC) + timedelta(hours=1)
        )
        assert sum(r.quantity for r in rows) == total
    finally:
        await client.close()


async def test_a_namespace_page_shows_its_own_usage_and_nothing_of_another_account(
    make_tenant_cell: TenantCellFactory,
) -> None:
    tenants = await make_tenant_cell({"a": Quota(), "b": Quota()}, start=False)
    settings = tenants.cell.settings
    a, b = tenants.a.record.name, tenants.b.record.name
    now = datetime.now(UTC)
    earlier = hour_of(now) - timedelta(hours=2)
    await publish_usage(
        settings,
        [
            *usage(a, "workflow_started", 5, earlier + timedelta(minutes=10)),
            *usage(a, "signal", 3, earlier + timedelta(minutes=20)),
            *usage(a, "active_storage", 1, earlier + timedelta(minutes=30), quantity=9 * 10**12),
            *usage(b, "signal", 47, earlier + timedelta(minutes=10)),
        ],
    )
    await tenants.cell.metering_process().start()

    async with running_console(settings) as console:
        await console.add_user("acct-a", "owner@a.example.com", "owner")
        await console.add_user("acct-a", "reader@a.example.com", "read-only")
        owner = await console.signed_in("owner@a.example.com")
        reader = await console.signed_in("reader@a.example.com")

        listed = await owner.get("/namespaces")
        assert f'href="/namespaces/{a}"' in listed.text and b not in listed.text
        # Another account's namespace is answered exactly as one that does not exist.
        made_up = await owner.get("/namespaces/no-such-namespace")
        other = await owner.get(f"/namespaces/{b}")
        assert made_up.status_code == other.status_code == 404
        assert other.text == made_up.text.replace("no-such-namespace", b)
        assert b not in other.text

        async def charted() -> str:
            shown = await owner.get(f"/namespaces/{a}")
            assert shown.status_code == 200
            assert f"{earlier:%Y-%m-%d %H:00} UTC: 8 actions (workflow_started 5, signal 3)" in shown.text
            assert f"{earlier:%Y-%m-%d %H:00} UTC: 2.5 GB-hours" in shown.text
            return shown.text

        page = await eventually(charted, timeout=60)
        assert "47 actions" not in page  # b's usage, counted by the same metering, is not a's
        assert page.count('<g class="hour">') == 3 * 24  # the three charts: every hour of the last day
        assert f'<th scope="row">{earlier:%Y-%m-%d %H:00}</th>' in page  # the numbers as a table
        assert "Throttled requests per hour" in page and "Throttled requests</th>" in page
        assert f'href="/namespaces/{a}/workflows"' in page
        assert "/static/usage.css" in page and "<script" not in page
        # Owners manage; a read-only user sees the same page without the forms or the audit trail.
        assert f'action="/namespaces/{a}/quota"' in page and f'action="/namespaces/{a}/rotate-key"' in page
        read_only = (await reader.get(f"/namespaces/{a}")).text
        assert "8 actions" in read_only
        assert (
            "/quota" not in read_only
            and "/rotate-key" not in read_only
            and "Recent activity" not in read_only
        )

        # A longer window; bad windows are refused with the reason.
        week = await owner.get(f"/namespaces/{a}?hours=168")
        assert week.status_code == 200 and week.text.count('<g class="hour">') == 3 * 168
        for bad in ("abc", "0", str(24 * 31 + 1), "-3", "1e3"):
            refused = await owner.get(f"/namespaces/{a}", params={"hours": bad})
            assert refused.status_code == 400, bad
            assert "hours must be a whole number from 1 to 744" in refused.text
        for client in (owner, reader):
            await client.aclose()


async def test_owners_and_admins_change_quotas_and_rotate_keys_others_are_refused(
    make_tenant_cell: TenantCellFactory,
) -> None:
    tenants = await make_tenant_cell({"a": Quota(), "b": Quota()}, start=False)
    settings = tenants.cell.settings
    a, b = tenants.a.record.name, tenants.b.record.name
    page = f"/namespaces/{a}"
    async with running_console(settings) as console:
        await console.add_user("acct-a", "admin@a.example.com", "admin")
        await console.add_user("acct-a", "dev@a.example.com", "developer")
        admin = await console.signed_in("admin@a.example.com")
        developer = await console.signed_in("dev@a.example.com")

        # A developer's forged quota change (with their own valid CSRF token) is refused and audited.
        forged = await developer.post_from(page, f"{page}/quota", {"actions_per_second": "100000"})
        assert forged.status_code == 403
        refused = await audit_entries(settings, actor="acct-a/dev@a.example.com", outcome="refused")
        assert [(e["action"], e["namespace"]) for e in refused] == [("namespace.update-quota", a)]
        forged_rotation = await developer.post_from(page, f"{page}/rotate-key", {})
        assert forged_rotation.status_code == 403
        assert (await namespace_record(settings, a)).quota == Quota()
        assert (await namespace_record(settings, a)).api_key_id == tenants.a.record.api_key_id

        # Bad numbers are refused with the field named, and nothing changes: not even the good number
        # sent beside the bad one.
        for field, value, named in (
            ("burst", "lots", "Burst"),
            ("actions_per_second", "-1", "Actions per second"),
            ("actions_per_second", "nan", "Actions per second"),
            ("max_concurrent_workflows", "0", "Max concurrent workflows"),
            ("retention_days", "0", "Retention days"),
            ("max_payload_bytes", "9" * 30, "Max payload bytes"),
        ):
            bad = await admin.post_from(page, f"{page}/quota", {"burst": "150", field: value})
            assert bad.status_code == 400, (field, value)
            assert named in bad.text, (field, value)
        assert (await namespace_record(settings, a)).quota == Quota()
        # Raising a limit past what the platform grants by default is the platform's call, not the tenant's.
        for field, value in (
            ("actions_per_second", "5000"),
            ("max_payload_bytes", str(10**9)),
            ("burst", "201"),
        ):
            raised = await admin.post_from(page, f"{page}/quota", {field: value})
            assert raised.status_code == 403, field
            assert "the platform&#39;s call" in raised.text or "the platform's call" in raised.text, field
        assert (await namespace_record(settings, a)).quota == Quota()

        # The admin's change is applied as `perdure namespace update` applies it (no control plane
        # here: directly), and audited.
        changed = await admin.post_from(
            page,
            f"{page}/quota",
            {
                "actions_per_second": "50.5",
                "burst": "120",
                "max_concurrent_workflows": "7",
                "retention_days": "14",
                "weight": "1000",  # not on the form: a tenant does not set its own fair share
            },
        )
        assert changed.status_code == 200
        assert "Quota changed" in changed.text
        record = await namespace_record(settings, a)
        assert (record.quota.actions_per_second, record.quota.burst) == (50.5, 120)
        assert record.quota.max_concurrent_workflows == 7 and record.retention_days == 14
        assert record.quota.weight == Quota().weight  # left as it was
        done = await audit_entries(settings, action="namespace.update-quota", outcome="done")
        assert [(e["actor"], e["namespace"]) for e in done] == [("acct-a/admin@a.example.com", a)]
        assert "burst 200 → 120" in done[0]["detail"]
        # The form shows the values now in force.
        assert 'name="burst" value="120"' in (await admin.get(page)).text

        # Another account's namespace cannot be changed by posting to its URL.
        elsewhere = await admin.post_from(page, f"/namespaces/{b}/quota", {"burst": "1"})
        assert elsewhere.status_code == 404
        assert (await namespace_record(settings, b)).quota == Quota()

        # Rotation: the new connection string is shown once, the old key stops working.
        old = tenants.connection_string("a")
        await (await aio_pika.connect(old)).close()  # the old key works until the rotation
        rotated = await admin.post_from(page, f"{page}/rotate-key", {})
        assert rotated.status_code == 200
        match = _SECRET.search(rotated.text)
        assert match is not None
        new = html.unescape(match.group(1))
        assert new != old
        record = await namespace_record(settings, a)
        assert record.api_key_id != tenants.a.record.api_key_id
        with pytest.raises(ProbableAuthenticationError):
            await aio_pika.connect(old)
        connection = await aio_pika.connect(new)
        await connection.close()
        assert "connection-string" not in (await admin.get(page)).text  # shown once only
        rotations = await audit_entries(settings, action="namespace.rotate-key", outcome="done")
        assert len(rotations) == 1 and record.api_key_id in rotations[0]["detail"]

        # The namespace's recent activity, for its managers.
        recent = (await admin.get(page)).text
        assert "namespace.rotate-key" in recent and "namespace.update-quota" in recent
        for client in (admin, developer):
            await client.aclose()


async def test_with_a_control_plane_a_quota_change_goes_through_the_namespace_twin(
    make_tenant_cell: TenantCellFactory,
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    code, _, err = await run_perdure(tenants, "controlplane", "bootstrap", "--cell", tenants.cell.cell)
    assert code == 0, err
    settings, a = tenants.cell.settings, tenants.a.record.name
    async with running_console(settings) as console:
        await console.add_user("acct-a", "owner@a.example.com", "owner")
        owner = await console.signed_in("owner@a.example.com")
        sent = await owner.post_from(f"/namespaces/{a}", f"/namespaces/{a}/quota", {"burst": "123"})
        assert sent.status_code == 200
        assert "sent to the control plane" in sent.text

        async def applied() -> None:
            assert (await namespace_record(settings, a)).quota.burst == 123

        await eventually(applied, timeout=60)
        [entry] = await audit_entries(settings, action="namespace.update-quota", outcome="done")
        assert entry["detail"] == "burst 200 → 123 (sent to the control plane)"
        await owner.aclose()


async def test_billing_lists_and_serves_the_accounts_own_exports(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota(), "b": Quota()}, start=False)
    settings = tenants.cell.settings.model_copy(update={"billing_export_dir": tmp_path / "exports"})
    a, b = tenants.a.record.name, tenants.b.record.name
    october = datetime(2026, 10, 14, 9, 30, tzinfo=UTC)
    september = datetime(2026, 9, 2, 9, 30, tzinfo=UTC)
    now = datetime.now(UTC)
    await publish_usage(
        settings,
        [
            *usage(a, "workflow_started", 30, october),
            *usage(b, "signal", 5, october),
            *usage(b, "signal", 2, september),
            *usage(a, "workflow_started", 12, now),  # this month: the estimate
            *usage(b, "query", 9, now),
        ],
    )
    await tenants.cell.metering_process().start()
    await eventually(lambda: counted(settings, [a, b], september, 30 + 5 + 2 + 12 + 9), timeout=60)
    await ensure_system_namespace(settings)  # where exports are announced
    await export_period(settings, "2026-10", now=now)  # every account
    await export_period(settings, "2026-09", account="acct-b", now=now)  # b's only
    mine = (settings.export_dir / "2026-10" / "acct-a.csv").read_bytes()

    async with running_console(settings) as console:
        await console.add_user("acct-a", "owner@a.example.com", "owner")
        await console.add_user("acct-a", "dev@a.example.com", "developer")
        owner = await console.signed_in("owner@a.example.com")
        developer = await console.signed_in("dev@a.example.com")

        assert (await developer.get("/billing")).status_code == 403
        assert (await developer.get("/billing/exports/2026-10.csv")).status_code == 403

        billing = await owner.get("/billing")
        assert billing.status_code == 200
        assert 'href="/billing/exports/2026-10.csv"' in billing.text
        assert "2026-09" not in billing.text  # b's period only
        # The month so far: a's namespaces only, priced with the free tier taking it all.
        assert a in billing.text and b not in billing.text
        assert 'id="estimate-total">0.00<' in billing.text
        assert f"{now:%Y-%m}" in billing.text

        downloaded = await owner.get("/billing/exports/2026-10.csv")
        assert downloaded.status_code == 200
        assert downloaded.content == mine
        assert downloaded.headers["content-type"].startswith("text/csv")
        assert 'filename="acct-a-2026-10.csv"' in downloaded.headers["content-disposition"]

        # Another account's period, and paths that try to leave the period's folder, are refused.
        theirs = (settings.export_dir / "2026-10" / "acct-b.csv").read_bytes()
        assert (await owner.get("/billing/exports/2026-09.csv")).status_code == 404
        for path, status in (
            ("/billing/exports/..%2F2026-10%2Facct-b.csv", 404),  # not one path segment: no such page
            ("/billing/exports/2026-10%2F..%2F2026-10%2Facct-b.csv", 404),
            ("/billing/exports/..csv", 400),
            ("/billing/exports/2026-10-..%5Cacct-b.csv", 400),
            ("/billing/exports/2026-13.csv", 400),
            ("/billing/exports/%D9%A2%D9%A0%D9%A2%D9%A6-%D9%A1%D9%A0.csv", 400),  # digits of another script
        ):
            refused = await owner.get(path)
            assert refused.status_code == status, path
            assert refused.content != theirs and b"account,period,status" not in refused.content, path
        for client in (owner, developer):
            await client.aclose()
