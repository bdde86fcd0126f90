"""``perdure stack``: install, start, inspect and stop the local Kafka, MongoDB API and RabbitMQ."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Annotated

import typer

from perdure.infra.local.services import StackError, progress
from perdure.infra.local.stack import LocalStack, ServiceStatus
from perdure.infra.settings import get_settings

stack_app = typer.Typer(
    help="The local stack: Kafka, FerretDB (MongoDB API) and RabbitMQ as local processes."
)


def _render(statuses: list[ServiceStatus]) -> str:
    rows = [("SERVICE", "STATE", "VERSION", "LISTENS ON", "PID")]
    for s in statuses:
        state = "up" if s.up else "down"
        if s.detail:
            state += f" ({s.detail})"
        rows.append((s.name, state, s.version, s.addresses, str(s.pid or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _stack() -> LocalStack:
    return LocalStack(get_settings())


def _tell_progress() -> None:
    """The stack's steps as they go, one plain line each on stderr (the table comes at the end)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("perdure stack: %(message)s"))
    progress.handlers[:] = [handler]
    progress.setLevel(logging.INFO)
    progress.propagate = False


@stack_app.command()
def up() -> None:
    """Install what is missing, start what is not running, and return once every service serves."""
    started = time.monotonic()
    stack = _stack()
    _tell_progress()
    try:
        statuses = asyncio.run(stack.up())
    except StackError as exc:
        typer.echo(f"perdure stack up: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(_render(statuses))
    typer.echo(f"stack up in {time.monotonic() - started:.1f}s; data and logs in {stack.settings.stack_dir}")
    if not all(s.up for s in statuses):
        raise typer.Exit(1)


@stack_app.command()
def down() -> None:
    """Stop the processes this stack started (by their pid files); data is kept."""
    stopped = _stack().down()
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack_app.command()
def status() -> None:
    """Each service, its version, its ports and whether it serves; exits 1 if any is down."""
    statuses = asyncio.run(_stack().status())
    typer.echo(_render(statuses))
    if not all(s.up for s in statuses):
        raise typer.Exit(1)


@stack_app.command()
def logs(
    service: Annotated[
        str | None, typer.Argument(help="kafka, mongodb or rabbitmq; all when omitted")
    ] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1)] = 40,
) -> None:
    """The last lines of the services' logs."""
    try:
        typer.echo(_stack().logs(service, lines))
    except StackError as exc:
        typer.echo(f"perdure stack logs: {exc}", err=True)
        raise typer.Exit(2) from None
