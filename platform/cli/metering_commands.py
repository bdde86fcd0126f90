"""``perdure metering run`` and ``perdure namespace usage``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from pymongo import AsyncMongoClient

from perdure.billing.metering_service import run_metering, usage_store
from perdure.billing.metric_units import billed_quantity, unit_of
from perdure.billing.usage_store import HourlyUsage
from perdure.infra.logs import configure_logging
from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command

metering_app = typer.Typer(help="Metering: count usage records into hourly aggregates.", no_args_is_help=True)


@metering_app.command("run")
def run() -> None:
    """Consume the metering topic and aggregate usage per namespace and hour (SIGTERM stops)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    run_command("metering run", run_metering(settings))


def _day_or_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date or time (2026-11-01, 2026-11-01T13:00)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def usage(
    name: str,
    since: Annotated[str, typer.Option("--from", help="first day or hour (UTC), inclusive")],
    until: Annotated[str | None, typer.Option("--to", help="end, exclusive (default: now)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """A namespace's metered usage per hour and metric (actions; storage in GB-hours)."""
    settings = get_settings()
    start = _day_or_time(since)
    end = _day_or_time(until) if until else datetime.now(UTC) + timedelta(hours=1)

    async def read() -> list[HourlyUsage]:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=10_000
        )
        try:
            return await usage_store(client, settings).hourly([name], start, end)
        finally:
            await client.close()

    rows = run_command("namespace usage", read())
    for row in rows:
        quantity = billed_quantity(row.metric, row.quantity)
        if as_json:
            line = {
                "namespace": row.namespace,
                "hour": row.hour.isoformat(),
                "metric": row.metric,
                "quantity": str(quantity),
                "unit": unit_of(row.metric),
            }
            typer.echo(json.dumps(line))
        else:
            typer.echo(f"{row.hour:%Y-%m-%d %H:00}  {row.metric:<24} {quantity:>14} {unit_of(row.metric)}")
    if not rows and not as_json:
        typer.echo(f"no usage of {name} from {start.isoformat()} to {end.isoformat()}")
