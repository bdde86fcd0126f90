"""``perdure system setup``: the system namespace and its scheduled workflows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer

from perdure.billing.export_schedule import SCHEDULE_ID, BillingExportSchedule
from perdure.infra.settings import get_settings
from perdure.platform.cell.ops_client import OpsClient, WorkflowNotFound
from perdure.platform.cli.async_command import run_command
from perdure.platform.control.system_namespace import ensure_system_namespace
from perdure.platform.core.definitions import workflow_name_of

system_app = typer.Typer(help="The system namespace, where the control plane runs its workflows.")


@system_app.command("setup")
def setup(
    cell: Annotated[str | None, typer.Option("--cell", help="default: the least loaded cell")] = None,
    billing_from: Annotated[
        str | None, typer.Option("--billing-from", help="first day to export (default: yesterday)")
    ] = None,
) -> None:
    """Create the system namespace (idempotent) and start the scheduled billing export if it is not
    running. The cell that holds the namespace must be running (`perdure cell run`) for it to work."""
    first_day = billing_from or (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    try:
        date.fromisoformat(first_day)
    except ValueError:
        raise typer.BadParameter(f"{first_day!r} is not a day (2026-11-01)") from None

    async def apply() -> str:
        settings = get_settings()
        record = await ensure_system_namespace(settings, cell)
        async with await OpsClient.connect(settings, record.name) as ops:
            try:
                running = (await ops.describe(SCHEDULE_ID))["status"] in ("running", "blocked")
            except WorkflowNotFound:
                running = False
            if running:
                return f"namespace {record.name} on cell {record.cell}; {SCHEDULE_ID} is already running"
            await ops.start_workflow(workflow_name_of(BillingExportSchedule.run), first_day, id=SCHEDULE_ID)
            return f"namespace {record.name} on cell {record.cell}; {SCHEDULE_ID} started from {first_day}"

    typer.echo(run_command("system setup", apply()))
