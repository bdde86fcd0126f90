"""``perdure billing export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from perdure.billing.billing_export import ExportResult, export_period
from perdure.billing.price_table import DEFAULT_PRICE_TABLE
from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.control.system_namespace import ensure_system_namespace

billing_app = typer.Typer(help="Billing exports: priced usage per account.", no_args_is_help=True)


@billing_app.command("export")
def export(
    period: Annotated[str, typer.Option("--period", help="a month (2026-11) or a day (2026-11-27), UTC")],
    export_format: Annotated[Literal["csv", "jsonl"], typer.Option("--format")] = "csv",
    account: Annotated[str | None, typer.Option("--account", help="one account (default: all)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="default: PERDURE_BILLING_EXPORT_DIR")] = None,
    prices: Annotated[Path, typer.Option("--prices", help="the price table (TOML)")] = DEFAULT_PRICE_TABLE,
    as_json: Annotated[bool, typer.Option("--json", help="print the announcement as JSON")] = False,
) -> None:
    """Write one invoice file per account for PERIOD and announce it on the `billing` exchange.
    Re-running it writes the same bytes; a period that has not ended is exported as provisional."""
    settings = get_settings()

    async def export_and_announce() -> ExportResult:
        # Exports are announced in the system namespace: made now if the control plane is not bootstrapped.
        await ensure_system_namespace(settings)
        return await export_period(
            settings, period, export_format=export_format, account=account, out_dir=out, prices=prices
        )

    result = run_command("billing export", export_and_announce())
    announcement = result.announcement
    if as_json:
        typer.echo(announcement.model_dump_json(indent=2))
        return
    typer.echo(
        f"{announcement.period} ({announcement.status}), price table {announcement.price_table_version}: "
        f"{len(announcement.files)} file(s) in {result.directory}"
    )
    for file in announcement.files:
        typer.echo(f"  {file.name}  {file.total} {announcement.currency}  sha256 {file.sha256}")
