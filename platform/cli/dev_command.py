"""``perdure dev``: the local stack, a cell, admission and executors, in the foreground, for a developer;
and the console beside them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from perdure.infra.logs import configure_logging
from perdure.infra.settings import Settings, get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.cli.console_commands import DEFAULT_PORT
from perdure.platform.cli.controlplane_commands import yesterday
from perdure.platform.cli.stack_commands import up as stack_up
from perdure.platform.control.provisioning import create_cell
from perdure.platform.processes.cell_process import run_cell
from perdure.platform.processes.control_bootstrap import bootstrap_control_plane
from perdure.platform.stores.console_credentials import ConsoleCredentials
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore

DEV_ACCOUNT = "dev"
DEV_USER = "dev@example.com"


async def dev_console_user(settings: Settings) -> str:
    """The developer's console login (owner of the ``dev`` account): a new password each start."""
    databases = Databases.connect(settings)
    try:
        tenancy = TenancyStore(databases.control_db)
        await tenancy.ensure_indexes()
        await tenancy.create_account(DEV_ACCOUNT)
        await tenancy.add_user(DEV_USER, DEV_ACCOUNT, "owner")
        credentials = ConsoleCredentials(databases.control_db)
        await credentials.ensure_indexes()
        return await credentials.issue_password(DEV_ACCOUNT, DEV_USER)
    finally:
        await databases.close()


def dev(
    cell: Annotated[str, typer.Option("--cell", help="the cell to create (if missing) and run")] = "dev",
    partitions: Annotated[int, typer.Option("--partitions", min=1, max=1024)] = 4,
    console_port: Annotated[
        int, typer.Option("--console-port", min=0, max=65535, help="0: no console")
    ] = DEFAULT_PORT,
) -> None:
    """Start the local stack, create a cell and run it here (engine, admission, executors) until Ctrl-C,
    with the console beside it.

    Then create a namespace on it (`perdure namespace create NAME --app MOD:ATTR --cell CELL --account
    dev`) and connect a tenant app with the connection string it prints."""
    stack_up()
    settings = get_settings()
    record = run_command("dev", create_cell(settings, cell, partitions))
    for line in run_command("dev", bootstrap_control_plane(settings, cell, yesterday())):
        typer.echo(line)
    console: subprocess.Popen[bytes] | None = None
    if console_port:
        password = run_command("dev", dev_console_user(settings))
        # Its own process: the console's server and the cell each handle their own signals.
        perdure = Path(sys.executable).parent / "perdure"
        console = subprocess.Popen([str(perdure), "console", "--port", str(console_port)])
        typer.echo(f"console: http://127.0.0.1:{console_port}/  sign in as {DEV_USER} / {password}")
    typer.echo(f"cell {record.name} ({record.partitions} partitions) running here; Ctrl-C stops it")
    configure_logging(settings.log_level, settings.log_format)
    try:
        run_command("dev", run_cell(settings, cell))
    finally:
        if console is not None:
            console.terminate()
            console.wait(timeout=30)
