"""``perdure cell create | update | list | processes | probe | run``."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from perdure.infra.logs import configure_logging
from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.control.provisioning import create_cell
from perdure.platform.control.twin_change import TwinChange
from perdure.platform.control.twin_requests import control_plane_ready, signal_twin, twin_if_bootstrapped
from perdure.platform.processes.cell_process import run_cell
from perdure.platform.stores.control_store import CellRecord, ProcessReport
from perdure.platform.stores.databases import Databases

cell_app = typer.Typer(
    help="Cells: isolated slices of the data plane (topic, database, processes).", no_args_is_help=True
)


@cell_app.command("create")
def create(
    name: str,
    partitions: Annotated[int, typer.Option("--partitions", "-p", min=1, max=1024)] = 8,
    capacity: Annotated[
        float, typer.Option("--capacity", min=0, help="actions/s the cell is sized for (placement)")
    ] = 1_000.0,
) -> None:
    """Register a cell, create its tasks and dead-letter topics and its database indexes."""

    async def create() -> CellRecord:
        settings = get_settings()
        record = await create_cell(settings, name, partitions, capacity)
        await twin_if_bootstrapped(settings, "cell", record.name)
        return record

    record = run_command("cell create", create())
    typer.echo(
        f"cell {record.name}: topic {record.topic} ({record.partitions} partitions), "
        f"dead letters {record.dlq_topic}, database {record.database}"
    )


@cell_app.command("update")
def update(
    name: str,
    capacity: Annotated[float | None, typer.Option("--capacity", min=0, help="actions/s (placement)")] = None,
    healthy: Annotated[
        bool | None, typer.Option("--healthy/--unhealthy", help="an unhealthy cell takes no new namespace")
    ] = None,
) -> None:
    """Change what placement knows of a cell: through its twin once the control plane is bootstrapped,
    else directly."""
    changes = {k: v for k, v in {"capacity": capacity, "healthy": healthy}.items() if v is not None}

    async def apply() -> str:
        settings = get_settings()
        if await control_plane_ready(settings):
            await signal_twin(settings, "cell", name, TwinChange(kind="update", fields=changes))
            return f"sent to the twin cell/{name}: {changes}"
        databases = Databases.connect(settings)
        try:
            record = await databases.control.update_cell(name, **changes)
        finally:
            await databases.close()
        health = "healthy" if record.healthy else "unhealthy"
        return f"cell {record.name}: capacity {record.capacity:g} actions/s, {health}"

    typer.echo(run_command("cell update", apply()))


@cell_app.command("list")
def list_cells() -> None:
    """The registered cells."""

    async def cells() -> list[CellRecord]:
        databases = Databases.connect(get_settings())
        try:
            return await databases.control.list_cells()
        finally:
            await databases.close()

    for record in run_command("cell list", cells()):
        health = "healthy" if record.healthy else "unhealthy"
        typer.echo(
            f"{record.name}\t{record.partitions} partitions\t{record.capacity:g} actions/s\t{health}"
            f"\t{record.topic}\t{record.database}"
        )


@cell_app.command("processes")
def processes(name: Annotated[str, typer.Argument(help="the cell")]) -> None:
    """The cell's processes as they last reported themselves: version, health, the dependencies each
    cannot reach. A process silent for longer than a minute is not listed."""

    async def reports() -> list[ProcessReport]:
        databases = Databases.connect(get_settings())
        try:
            await databases.control.get_cell(name)
            return await databases.control.processes_of(name, datetime.now(UTC) - timedelta(minutes=1))
        finally:
            await databases.close()

    found = run_command("cell processes", reports())
    if not found:
        typer.echo(f"no process of cell {name} reported in the last minute")
    for report in sorted(found, key=lambda r: r.process):
        health = "healthy" if report.healthy else "unhealthy"
        unreachable = f"cannot reach {', '.join(report.unreachable)}" if report.unreachable else "reaches all"
        age = (datetime.now(UTC) - report.reported_at).total_seconds()
        typer.echo(
            f"{report.process}\t{report.version}\t{health}\t{unreachable}\t"
            f"error rate {report.error_rate:.0%}\tlag {report.lag}\treported {age:.0f} s ago"
        )


def process_host(process: str) -> str:
    """The host of a process id ``"<cell>/<host>:<pid>"`` (process_reporter.py)."""
    return process.rpartition("/")[2].rpartition(":")[0]


def probe_verdict(
    reports: Iterable[ProcessReport], host: str, now: datetime, within: timedelta
) -> tuple[bool, str]:
    """Whether the latest report of a process on ``host`` is healthy and fresh, and why not. Only the
    latest counts: a process that restarted on the same host must not pass on its predecessor's word."""
    mine = [r for r in reports if process_host(r.process) == host]
    if not mine:
        return False, f"no process on {host} reported in the last {within.total_seconds():g} s"
    return max(mine, key=lambda r: r.reported_at).verdict(now, within)


@cell_app.command("probe")
def probe(
    name: Annotated[str, typer.Argument(help="the cell")],
    within: Annotated[float, typer.Option("--within", min=1, help="seconds a report stays fresh")] = 30.0,
) -> None:
    """Exit 0 only when a process of the cell on this host reported itself healthy within the last
    WITHIN seconds: a container's health check, which the process's own reports answer (engine alive,
    dependencies reachable, few failed batches)."""
    window = timedelta(seconds=within)

    async def reports() -> list[ProcessReport]:
        databases = Databases.connect(get_settings())
        try:
            await databases.control.get_cell(name)
            return await databases.control.processes_of(name, datetime.now(UTC) - window)
        finally:
            await databases.close()

    healthy, reason = probe_verdict(
        run_command("cell probe", reports()), socket.gethostname(), datetime.now(UTC), window
    )
    typer.echo(reason, err=not healthy)
    if not healthy:
        raise typer.Exit(1)


@cell_app.command("run")
def run(
    name: str,
    no_workers: Annotated[bool, typer.Option("--no-workers", help="no platform-hosted workers")] = False,
) -> None:
    """Run the cell's engine, timers, admission and workers in the foreground (SIGTERM stops)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    run_command("cell run", run_cell(settings, name, workers=not no_workers))
