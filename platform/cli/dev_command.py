"""``perdure dev``: the local stack, a cell, admission and executors, in the foreground, for a developer."""

from __future__ import annotations

from typing import Annotated

import typer

from perdure.infra.logs import configure_logging
from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.cli.controlplane_commands import yesterday
from perdure.platform.cli.stack_commands import up as stack_up
from perdure.platform.control.provisioning import create_cell
from perdure.platform.processes.cell_process import run_cell
from perdure.platform.processes.control_bootstrap import bootstrap_control_plane


def dev(
    cell: Annotated[str, typer.Option("--cell", help="the cell to create (if missing) and run")] = "dev",
    partitions: Annotated[int, typer.Option("--partitions", min=1, max=1024)] = 4,
) -> None:
    """Start the local stack, create a cell and run it here (engine, admission, executors) until Ctrl-C.

    Then create a namespace on it (`perdure namespace create NAME --app MOD:ATTR --cell CELL`) and connect
    a tenant app with the connection string it prints."""
    stack_up()
    settings = get_settings()
    record = run_command("dev", create_cell(settings, cell, partitions))
    for line in run_command("dev", bootstrap_control_plane(settings, cell, yesterday())):
        typer.echo(line)
    typer.echo(f"cell {record.name} ({record.partitions} partitions) running here; Ctrl-C stops it")
    configure_logging(settings.log_level, settings.log_format)
    run_command("dev", run_cell(settings, cell))
