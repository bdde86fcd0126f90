"""``perdure controlplane bootstrap``: the system namespace and the control plane's workflows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer

from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.processes.control_bootstrap import bootstrap_control_plane

controlplane_app = typer.Typer(
    help="The control plane: its workflows run in the system namespace, on the platform itself.",
    no_args_is_help=True,
)


def yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


@controlplane_app.command("bootstrap")
def bootstrap(
    cell: Annotated[
        str | None, typer.Option("--cell", help="the control cell (default: placement picks)")
    ] = None,
    billing_from: Annotated[
        str | None,
        typer.Option("--billing-from", help="first day the scheduled export covers (default: yesterday)"),
    ] = None,
) -> None:
    """Create the system namespace on the control cell and start the control plane's workflows
    (idempotent). The control cell must be running (`perdure cell run CELL`) for them to work."""
    try:
        first_day = date.fromisoformat(billing_from) if billing_from else yesterday()
    except ValueError:
        raise typer.BadParameter(f"{billing_from!r} is not a day (2026-11-01)") from None
    for line in run_command(
        "controlplane bootstrap", bootstrap_control_plane(get_settings(), cell, first_day)
    ):
        typer.echo(line)
