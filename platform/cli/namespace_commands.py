"""``perdure namespace create``: a namespace on a cell, with its app and its RabbitMQ vhost."""

from __future__ import annotations

from typing import Annotated

import typer

from perdure.infra.settings import get_settings
from perdure.platform.cell.provisioning import create_namespace
from perdure.platform.cli.async_command import run_command

namespace_app = typer.Typer(
    help="Namespaces: the unit of isolation, capacity and billing.", no_args_is_help=True
)


@namespace_app.command("create")
def create(
    name: str,
    app: Annotated[str, typer.Option("--app", help="the app's import path, module:attribute")],
    cell: Annotated[str, typer.Option("--cell")],
) -> None:
    """Create a namespace running APP on CELL (idempotent)."""
    record = run_command("namespace create", create_namespace(get_settings(), name, app, cell))
    typer.echo(f"namespace {record.name}: app {record.app} on cell {record.cell}, vhost {record.vhost}")
