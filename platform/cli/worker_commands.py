"""``perdure worker run``: a tenant-hosted worker, on the tenant's own machine, with nothing but the
namespace's connection string."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from perdure.infra.bounded_stop import end_process, stop_on_signals
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
    shutdown_seconds: Annotated[
        float,
        typer.Option(
            "--shutdown-seconds",
            min=1,
            help="after SIGTERM, how long running activities may take before they are handed back "
            "(the process ends a little after it whatever happens)",
        ),
    ] = 30.0,
) -> None:
    """Run the namespace's workflow and activity tasks here until SIGTERM or Ctrl-C."""
    connection = connect or os.environ.get("PERDURE_CONNECTION")
    if not connection:
        raise typer.BadParameter("give --connect or set PERDURE_CONNECTION", param_hint="--connect")
    registry = WithCanary(load_app(app))

    async def serve() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop, shutdown_seconds, "worker")
        worker = Worker(connection, registry, max_concurrent_activities=max_concurrent_activities)
        await worker.start()
        typer.echo(f"worker {worker.identity} serving", err=True)
        await stop.wait()
        await worker.shutdown(shutdown_seconds * 2 / 3)
        if worker.handed_back:
            # Their threads cannot be stopped and would keep the interpreter alive: end here.
            end_process(0)

    run_command("worker run", serve())
