"""``perdure worker run``: a tenant-hosted worker, on the tenant's own machine, with nothing but the
namespace's connection string."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Annotated

import typer

from perdure.platform.cli.async_command import run_command
from perdure.platform.control.canary import WithCanary
from perdure.tenants.app_loader import load_app
from perdure.tenants.worker import Worker

worker_app = typer.Typer(
    help="Workers that run a namespace's code on your own machines.", no_args_is_help=True
)


@worker_app.command("run")
def run(
    app: Annotated[str, typer.Option("--app", help="the app's import path, module:attribute")],
    connect: Annotated[
        str | None,
        typer.Option("--connect", help="the namespace's connection string (default: $PERDURE_CONNECTION)"),
    ] = None,
    max_concurrent_activities: Annotated[int, typer.Option("--max-concurrent-activities")] = 100,
) -> None:
    """Run the namespace's workflow and activity tasks here until SIGTERM or Ctrl-C."""
    connection = connect or os.environ.get("PERDURE_CONNECTION")
    if not connection:
        raise typer.BadParameter("give --connect or set PERDURE_CONNECTION", param_hint="--connect")
    registry = WithCanary(load_app(app))

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = Worker(connection, registry, max_concurrent_activities=max_concurrent_activities)
        await worker.start()
        typer.echo(f"worker {worker.identity} serving", err=True)
        await stop.wait()
        await worker.shutdown()

    run_command("worker run", serve())
