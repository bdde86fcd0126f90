"""``perdure billing export``: price each account's usage of a period and write one file per account,
then announce the export on the ``billing`` exchange with the files' SHA-256 checksums.

Re-running an export of the same period gives the same bytes (given the same usage: a provisional
export of an open period changes as usage comes in). Namespaces without an account (ops namespaces,
the system namespace) are not billed.
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from pymongo import AsyncMongoClient

from perdure.billing.export_files import ExportFormat, render
from perdure.billing.invoice import BillingPeriod, price_usage
from perdure.billing.metering_service import usage_store
from perdure.billing.price_table import DEFAULT_PRICE_TABLE, load_price_table
from perdure.infra.settings import Settings
from perdure.infra.telemetry import inject_amqp_headers
from perdure.platform.protocol.billing_wire import (
    BILLING_EXCHANGE,
    ExportAnnouncement,
    ExportedFile,
    announcement_routing_key,
)
from perdure.platform.stores.control_store import ControlError, ControlStore
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    announcement: ExportAnnouncement


async def export_period(
    settings: Settings,
    period_label: str,
    *,
    export_format: ExportFormat = "csv",
    account: str | None = None,
    out_dir: Path | None = None,
    prices: Path = DEFAULT_PRICE_TABLE,
    now: datetime | None = None,
    on_file: Callable[[ExportedFile], None] | None = None,
) -> ExportResult:
    """``on_file`` hears of each file once written (the scheduled export heartbeats with it)."""
    table = load_price_table(prices)  # a bad table stops the export before anything is written
    period = BillingPeriod.parse(period_label)
    status = period.status(now or datetime.now(UTC))
    directory = out_dir or settings.export_dir
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    try:
        control_db = client[settings.control_database]
        tenancy = TenancyStore(control_db)
        accounts = [await tenancy.get_account(account)] if account else await tenancy.list_accounts()
        control = ControlStore(control_db)
        usage = usage_store(client, settings)
        files = []
        for record in accounts:
            namespaces = [n.name for n in await control.list_namespaces(record.name)]
            metered: collections.Counter[tuple[str, str]] = collections.Counter()
            for hourly in await usage.hourly(namespaces, period.start, period.end):
                metered[hourly.namespace, hourly.metric] += hourly.quantity
            invoice = price_usage(record.name, period, status, metered, table)
            content = render(invoice, export_format)
            name = f"{period.label}/{record.name}.{export_format}"
            _write_atomically(directory / name, content)
            exported = ExportedFile(
                account=record.name,
                name=name,
                sha256=hashlib.sha256(content).hexdigest(),
                bytes=len(content),
                total=format(invoice.total, "f"),
            )
            files.append(exported)
            if on_file is not None:
                on_file(exported)
    finally:
        await client.close()
    announcement = ExportAnnouncement(
        period=period.label,
        status=status,
        format=export_format,
        currency=table.currency,
        price_table_version=table.version,
        files=files,
    )
    await announce(settings, announcement)
    return ExportResult(directory, announcement)


def _write_atomically(path: Path, content: bytes) -> None:
    # A reader never sees half a file: it is the old one or the new one.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(content)
    os.replace(partial, path)


async def announce(settings: Settings, announcement: ExportAnnouncement) -> None:
    """Publish on the ``billing`` exchange of the system namespace's vhost (confirmed, persistent)."""
    databases = Databases.connect(settings)
    try:
        system = await databases.control.get_namespace(settings.system_namespace)
    except ControlError as exc:
        # Made by the control plane's bootstrap, and by `perdure billing export` before it exports.
        raise ControlError(
            f"the system namespace {settings.system_namespace!r}, where exports are announced, does not "
            "exist: `perdure controlplane bootstrap` makes it"
        ) from exc
    finally:
        await databases.close()
    connection = await aio_pika.connect(namespace_amqp_url(settings, system.cell, system.vhost))
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(BILLING_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        await exchange.publish(
            aio_pika.Message(
                announcement.model_dump_json().encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                type="billing_export",
                headers=inject_amqp_headers({}),
            ),
            routing_key=announcement_routing_key(announcement.period),
        )
    finally:
        await connection.close()
