"""``perdure dlq list | redrive``: dead-lettered messages and parked runs of a cell."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from perdure.infra.settings import get_settings
from perdure.platform.cell import dead_letters
from perdure.platform.cli.async_command import run_command
from perdure.platform.stores.databases import Databases

dlq_app = typer.Typer(help="Dead letters and parked workflows of a cell.", no_args_is_help=True)


@dlq_app.command("list")
def list_dead_letters(cell: str) -> None:
    """Dead-lettered messages (with the reason) and parked runs (status blocked)."""
    settings = get_settings()

    async def gather() -> tuple[Any, Any, set[str]]:
        databases = Databases.connect(settings, cell)
        try:
            record = await databases.control.get_cell(cell)
            letters = await dead_letters.read_dead_letters(settings, record)
            runs = await dead_letters.parked_runs(databases, settings, record)
        finally:
            await databases.close()
        return letters, runs, await dead_letters.redriven_ids(settings, record)

    letters, runs, redriven = run_command("dlq list", gather())
    for letter in letters:
        mark = " (redriven)" if letter.id in redriven else ""
        typer.echo(f"message\t{letter.id}\t{letter.key}\t{letter.reason}{mark}")
    for run in runs:
        typer.echo(f"run\t{run.id}\t{run.run_id}\t{run.reason}")
    if not letters and not runs:
        typer.echo("no dead letters")


@dlq_app.command("redrive")
def redrive(
    cell: str,
    id: Annotated[
        str | None, typer.Option("--id", help="a message id (topic:partition:offset) or namespace/workflow")
    ] = None,
) -> None:
    """Send dead letters back (all not yet redriven, or one) and replay parked runs with the current code."""
    settings = get_settings()

    async def go() -> dict[str, Any]:
        databases = Databases.connect(settings, cell)
        try:
            record = await databases.control.get_cell(cell)
        finally:
            await databases.close()
        return await dead_letters.redrive(settings, record, id)

    result = run_command("dlq redrive", go())
    typer.echo(f"redriven: {len(result['dead_letters'])} message(s), {len(result['runs'])} run(s)")
