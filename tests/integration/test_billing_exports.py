"""Billing exports on the real services: the same export twice gives the same bytes, amounts match a
hand-computed example, every export is announced with its checksums, bad price tables and empty periods
are handled, and the scheduled export keeps going through a crash of its cell."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika

from perdure.billing.export_schedule import GRACE, SCHEDULE_ID
from perdure.infra.settings import Settings
from perdure.platform.control.system_namespace import ensure_system_namespace
from perdure.platform.core import history as h
from perdure.platform.core.usage import UsageRecord
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.protocol.billing_wire import BILLING_EXCHANGE, ExportAnnouncement
from perdure.platform.tenancy.model import Quota
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url

from .cell_harness import eventually, publish_usage, run_perdure
from .conftest import TenantCellFactory

PRICES = (Path(__file__).parents[1] / "hand_prices.toml").read_text()  # the unit tests' table


class Announcements:
    """A queue bound to the ``billing`` exchange of the system namespace's vhost."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[ExportAnnouncement] = asyncio.Queue()
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def open(self, settings: Settings) -> None:
        system = await ensure_system_namespace(settings)
        self._connection = await aio_pika.connect(namespace_amqp_url(settings, system.cell, system.vhost))
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(BILLING_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "export.#")

        async def deliver(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                await self.received.put(ExportAnnouncement.model_validate_json(message.body))

        await queue.consume(deliver)

    async def next(self, timeout: float = 30) -> ExportAnnouncement:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


def usage(namespace: str, metric: str, count: int, at: datetime, quantity: int = 1) -> list[UsageRecord]:
    return [
        UsageRecord(
            id=f"{namespace}/{metric}/{i}", namespace=namespace, metric=metric, quantity=quantity, at=at
        )  # type: ignore[arg-type]
        for i in range(count)
    ]


async def test_exports_are_reproducible_priced_by_hand_and_announced(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota(), "b": Quota()}, start=False)
    settings = tenants.cell.settings
    a, b = (tenants.namespaces[label].record.name for label in ("a", "b"))
    october = datetime(2026, 10, 14, 9, 30, tzinfo=UTC)
    await publish_usage(
        settings,
        [
            *usage(a, "workflow_started", 30, october),  # 30 x 0.25 = 7.50, 10 of them free: -2.50
            *usage(a, "signal", 5, october),  # 5 x 0.10 = 0.50
            *usage(b, "query", 4, october),  # 4 x 0.0125 = 0.05
            *usage(b, "active_storage", 1, october, quantity=9 * 10**12),  # 2.5 GB-hours x 2.00 = 5.00
        ],
    )
    await tenants.cell.metering_process().start()

    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    announcements = Announcements()
    await announcements.open(settings)
    out = tmp_path / "exports"

    async def export_matches() -> list[ExportAnnouncement]:
        code, _, err = await run_perdure(
            tenants, "billing", "export", "--period", "2026-10", "--prices", str(prices), "--out", str(out)
        )
        assert code == 0, err
        announced = await announcements.next()
        assert {f.account: f.total for f in announced.files} == {"acct-a": "5.50", "acct-b": "5.05"}
        return [announced]

    try:
        first = (await eventually(export_matches, timeout=60))[0]  # once metering has counted it all
        csv_a = (out / "2026-10" / "acct-a.csv").read_bytes()
        assert csv_a.decode().splitlines() == [
            "account,period,status,namespace,metric,quantity,unit,unit_price,currency,amount",
            f"acct-a,2026-10,final,{a},workflow_started,30,action,0.25,EUR,7.50",
            f"acct-a,2026-10,final,{a},signal,5,action,0.10,EUR,0.50",
            "acct-a,2026-10,final,*,workflow_started,-10,action,0.25,EUR,-2.50",
            "acct-a,2026-10,final,,total,,,,EUR,5.50",
        ]
        assert first.status == "final" and first.price_table_version == "hand-1"
        for file in first.files:
            assert hashlib.sha256((out / file.name).read_bytes()).hexdigest() == file.sha256

        # The same export again: the same bytes, the same checksums announced.
        code, _, err = await run_perdure(
            tenants, "billing", "export", "--period", "2026-10", "--prices", str(prices), "--out", str(out)
        )
        assert code == 0, err
        again = await announcements.next()
        assert again.files == first.files
        assert (out / "2026-10" / "acct-a.csv").read_bytes() == csv_a

        # JSON Lines carries the same lines.
        code, _, err = await run_perdure(
            tenants,
            "billing",
            "export",
            "--period",
            "2026-10",
            "--format",
            "jsonl",
            "--prices",
            str(prices),
            "--out",
            str(out),
            "--account",
            "acct-b",
        )
        assert code == 0, err
        jsonl = await announcements.next()
        assert [(f.name, f.total) for f in jsonl.files] == [("2026-10/acct-b.jsonl", "5.05")]
    finally:
        await announcements.close()


async def test_a_bad_price_table_is_refused_and_an_empty_period_exports_empty(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota()}, start=False)
    out = tmp_path / "exports"
    bad = tmp_path / "bad.toml"
    bad.write_text(PRICES.replace('unit_price = "0.10"', "unit_price = 0.10"))
    code, _, err = await run_perdure(
        tenants, "billing", "export", "--period", "2026-09", "--prices", str(bad), "--out", str(out)
    )
    assert code == 1
    assert f"{bad}:11: metrics.signal.unit_price: write 0.1 as a string" in err
    assert not out.exists()  # refused before anything was written

    code, output, err = await run_perdure(
        tenants, "billing", "export", "--period", "2026-09", "--out", str(out)
    )
    assert code == 0, err
    assert (out / "2026-09" / "acct-a.csv").read_text().splitlines() == [
        "account,period,status,namespace,metric,quantity,unit,unit_price,currency,amount",
        "acct-a,2026-09,final,,total,,,,USD,0.00",
    ]
    assert "2026-09 (final)" in output


def _periods(first_day: date, today: date) -> list[str]:
    periods, day = [], first_day
    while day < today:
        periods.append(day.isoformat())
        if (day + timedelta(days=1)).day == 1:
            periods.append(f"{day:%Y-%m}")
        day += timedelta(days=1)
    return periods


async def test_the_scheduled_export_covers_every_closed_period_through_a_crash(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    out = tmp_path / "exports"
    tenants = await make_tenant_cell({"a": Quota()}, PERDURE_BILLING_EXPORT_DIR=str(out))
    # A day is exported once it ended GRACE ago (late usage records come in meanwhile): just after
    # midnight, yesterday is not due yet.
    today = (datetime.now(UTC) - GRACE).date()
    first_day = today.replace(day=1) - timedelta(days=2)  # the end of last month, and this month so far
    periods = _periods(first_day, today)
    code, output, err = await run_perdure(
        tenants,
        "controlplane",
        "bootstrap",
        "--cell",
        tenants.cell.cell,
        "--billing-from",
        first_day.isoformat(),
    )
    assert code == 0, err
    assert "started" in output

    async def first_export() -> None:
        assert (out / periods[0] / "acct-a.csv").exists()

    await eventually(first_export, timeout=60)
    tenants.cell.processes[0].kill(signal.SIGKILL)  # mid-way through the catch-up
    await tenants.cell.processes[0].wait()
    await tenants.cell.start_process().start()

    async def all_exported() -> None:
        for period in periods:
            for suffix in ("csv", "jsonl"):
                assert (out / period / f"acct-a.{suffix}").exists(), period

    await eventually(all_exported, timeout=120)
    async with await OpsClient.connect(tenants.cell.settings, tenants.cell.settings.system_namespace) as ops:

        async def caught_up() -> dict[str, Any]:
            described = await ops.describe(SCHEDULE_ID)
            assert described["pending_timers"] == 1 and described["pending_activities"] == 0
            return described

        described = await eventually(caught_up, timeout=60)
        assert described["status"] == "running"  # asleep until today ends
        history = await ops.history(SCHEDULE_ID)
    exported = [e for e in history if isinstance(e, h.ActivityTaskCompleted)]
    assert len(exported) == len(periods)  # each period once in the history, whatever ran twice
    code, output, _ = await run_perdure(tenants, "controlplane", "bootstrap", "--cell", tenants.cell.cell)
    assert code == 0 and "already running" in output
