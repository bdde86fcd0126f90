"""The demo the README's first command runs: two tenants share a cell, each runs orders through the
tenant client; per-tenant results, stats and metered usage are printed, and this month's billing export
is written.

Run (the stack up): .venv/bin/python -m examples.demo [--orders 20]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from datetime import UTC, datetime, timedelta

from pymongo import AsyncMongoClient

from examples.orders import ExpressOrder
from perdure.billing.billing_export import export_period
from perdure.billing.metering_service import metering_group, run_metering, usage_store
from perdure.infra.consumer_backlog import ConsumerBacklog
from perdure.infra.logs import configure_logging
from perdure.infra.settings import Settings, load_settings
from perdure.infra.telemetry import configure_telemetry
from perdure.platform.control.namespace_requests import provision_namespace
from perdure.platform.control.provisioning import create_cell, rotate_key
from perdure.platform.control.system_namespace import ensure_system_namespace
from perdure.platform.core.usage import ACTION_METRICS
from perdure.platform.messaging.usage_producer import METERING_PARTITIONS
from perdure.platform.processes.cell_process import run_cell
from perdure.platform.stores.console_credentials import ConsoleCredentials
from perdure.platform.stores.control_store import ControlError
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.model import Quota
from perdure.tenants import Client

CELL = "demo"
DEMO_OWNER = "owner@acme.example.com"
APP = "examples.orders:app"
TENANTS = {  # account: (namespace, quota)
    "acme": ("acme-orders", Quota(actions_per_second=50, burst=20, weight=1)),
    "globex": ("globex-orders", Quota(actions_per_second=200, burst=100, weight=2)),
}


async def connection_string(settings: Settings, account: str, namespace: str, quota: Quota) -> str:
    """The namespace's connection string: from its creation, or (it exists already) from a new key."""
    databases = Databases.connect(settings)
    try:
        await TenancyStore(databases.control_db).create_account(account)
    finally:
        await databases.close()
    provisioned = await provision_namespace(settings, namespace, APP, cell=CELL, account=account, quota=quota)
    if provisioned.connection_string is None:  # a second demo run: the first key was shown once only
        provisioned = await rotate_key(settings, namespace)
    assert provisioned.connection_string is not None
    return provisioned.connection_string


async def run_orders(connection: str, prefix: str, orders: int) -> tuple[list[str], float]:
    started = time.monotonic()
    async with await Client.connect(connection) as client:
        handles = [
            await client.start_workflow(
                ExpressOrder.run, f"{prefix}-{i}", id=f"{prefix}-{i}-{time.time_ns()}"
            )
            for i in range(orders)
        ]
        assert await handles[0].query(ExpressOrder.status) == "waiting"
        for handle in handles:
            await handle.signal(ExpressOrder.approve)
        receipts = [await handle.result(timeout=120) for handle in handles]
    return receipts, time.monotonic() - started


async def main(orders: int) -> None:
    configure_logging("WARNING")
    settings = load_settings()
    try:
        await create_cell(settings, CELL, 4)
    except ControlError as exc:
        print(f"demo: {exc}")
        raise SystemExit(1) from None
    connections = {
        account: await connection_string(settings, account, namespace, quota)
        for account, (namespace, quota) in TENANTS.items()
    }
    stop, stop_metering = asyncio.Event(), asyncio.Event()
    telemetry = configure_telemetry(settings, "perdure-demo")
    cell = asyncio.create_task(run_cell(settings, CELL, stop=stop, telemetry=telemetry))
    metering = asyncio.create_task(run_metering(settings, stop=stop_metering, telemetry=telemetry))
    try:
        outcomes = await asyncio.gather(
            *(run_orders(connections[account], account, orders) for account in TENANTS)
        )
    finally:
        stop.set()
        await cell
    try:
        await metering_caught_up(settings)
    finally:
        stop_metering.set()
        await metering
        telemetry.shutdown()
    databases = Databases.connect(settings)
    try:
        runs = databases.runs(settings, CELL).runs
        print(f"demo: cell {CELL!r}, {len(TENANTS)} tenants, {orders} orders each (start, approve, charge)")
        for (account, (namespace, quota)), (receipts, seconds) in zip(TENANTS.items(), outcomes, strict=True):
            completed = await runs.count_documents({"namespace": namespace, "status": "completed"})
            print(
                f"  {account:<7} namespace {namespace:<14} {quota.actions_per_second:g} actions/s, "
                f"weight {quota.weight}: {len(receipts)} receipts in {seconds:.1f} s "
                f"(e.g. {receipts[0]}); {completed} completed in all"
            )
    finally:
        await databases.close()
    await print_usage(settings)
    period = f"{datetime.now(UTC):%Y-%m}"
    await ensure_system_namespace(settings)  # where the export is announced
    exported = await export_period(settings, period)
    announcement = exported.announcement
    print(f"billing export {period} ({announcement.status}), announced on the `billing` exchange:")
    for file in announcement.files:
        if file.account in TENANTS:
            print(f"  {exported.directory / file.name}: {file.total} {announcement.currency}")
    password = await console_owner(settings, "acme", DEMO_OWNER)
    print(f"console user: {DEMO_OWNER} / {password} (owner of account acme; a new password each demo run)")
    print(
        "next: `.venv/bin/perdure namespace stats acme-orders`, "
        "`.venv/bin/perdure workflow list acme-orders`, "
        f"`.venv/bin/perdure namespace usage acme-orders --from {datetime.now(UTC):%Y-%m-%d}`"
    )


async def console_owner(settings: Settings, account: str, email: str) -> str:
    """The account's owner, who signs in to the console with the password returned."""
    databases = Databases.connect(settings)
    try:
        await TenancyStore(databases.control_db).add_user(email, account, "owner")
        credentials = ConsoleCredentials(databases.control_db)
        await credentials.ensure_indexes()
        return await credentials.issue_password(account, email)
    finally:
        await databases.close()


async def metering_caught_up(settings: Settings, timeout: float = 60) -> None:
    """Wait until metering has counted everything the cell sent it."""
    backlog = ConsumerBacklog(
        settings.endpoints().kafka(),
        settings.metering_topic,
        METERING_PARTITIONS,
        metering_group(settings),
    )
    await backlog.start()
    try:
        async with asyncio.timeout(timeout):
            # The backlog is Kafka's to tell: nothing signals it, so it is measured again.
            while await backlog.records() > 0:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        await backlog.stop()


async def print_usage(settings: Settings) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        print("usage today (all demo runs), as metered:")
        for account, (namespace, _) in TENANTS.items():
            totals: collections.Counter[str] = collections.Counter()
            for row in await usage_store(client, settings).hourly(
                [namespace], today, today + timedelta(days=1)
            ):
                totals[row.metric] += row.quantity
            actions = ", ".join(f"{metric} {totals[metric]}" for metric in ACTION_METRICS if totals[metric])
            print(f"  {account:<7} {namespace:<14} {actions}")
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=20)
    asyncio.run(main(parser.parse_args().orders))
