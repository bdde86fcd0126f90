"""``perdure schedule create | list | describe | pause | unpause | trigger | backfill | delete``:
Temporal-style schedules, each a ``Schedule`` workflow of the system namespace that starts a workflow of
a namespace at its action times (``platform/control/schedule_workflow.py``). Bad input is refused in one
line, before anything starts."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.cli.document_output import JsonOption, echo_document
from perdure.platform.control.schedule_requests import (
    ScheduleError,
    create_schedule,
    describe_schedule,
    list_schedules,
    new_request,
    send_request,
)
from perdure.platform.control.schedule_text import spec_summary
from perdure.platform.core.schedule_policy import DEFAULT_OVERLAP_POLICY, OverlapPolicy
from perdure.platform.core.schedule_spec import IntervalSpec, ScheduleSpec, next_action_times
from perdure.platform.protocol.schedule_wire import (
    RequestKind,
    ScheduleDefinition,
    ScheduleRequest,
    first_error,
)

schedule_app = typer.Typer(
    help="Schedules: start a workflow of a namespace at cron times or intervals, durably.",
    no_args_is_help=True,
)
OVERLAP_POLICIES: tuple[str, ...] = typing.get_args(OverlapPolicy)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|[dhms])")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(.+))?")
OverlapOption = Annotated[
    str | None,
    typer.Option("--overlap", help=f"overlap policy: {', '.join(OVERLAP_POLICIES)}"),
]


def parse_duration(option: str, value: str) -> timedelta:
    """``30s``, ``5m``, ``1h30m``, ``1d``, ``500ms``; a bare number is seconds."""
    text = value.strip().lower()
    try:
        return timedelta(seconds=float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ScheduleError(f"{option} {value!r}: not a duration (30s, 5m, 1h30m, 1d)")
    return timedelta(seconds=sum(float(number) * _UNITS[unit] for number, unit in parts))


def parse_time(option: str, value: str) -> datetime:
    """An ISO 8601 time with its offset (``2026-05-01T09:00:00Z``, ``...+02:00``), or ``now``,
    ``now-10m``, ``now+1h``."""
    relative = _RELATIVE.fullmatch(value.strip().lower())
    if relative is not None:
        sign, amount = relative.groups()
        shift = parse_duration(option, amount) if amount else timedelta(0)
        return datetime.now(UTC) + (-shift if sign == "-" else shift)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise ScheduleError(
            f"{option} {value!r}: not a time with its offset (2026-05-01T09:00:00Z, ...+02:00) nor "
            "now, now-10m, now+1h"
        )
    return moment


def parse_overlap(value: str | None) -> OverlapPolicy | None:
    if value is None:
        return None
    normal = value.strip().lower().replace("-", "_")
    if normal not in OVERLAP_POLICIES:
        raise ScheduleError(f"--overlap {value!r}: one of {', '.join(OVERLAP_POLICIES)}")
    return typing.cast(OverlapPolicy, normal)


def parse_input(value: str | None) -> list[Any]:
    if value is None:
        return []
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ScheduleError(f"--input is not JSON: {exc}") from None
    return parsed if isinstance(parsed, list) else [parsed]


@schedule_app.command("create")
def create(
    namespace: str,
    schedule_id: str,
    workflow_type: Annotated[str, typer.Option("--workflow", help="the workflow type each action starts")],
    input: Annotated[
        str | None, typer.Option("--input", help="JSON: the workflow's one argument, or a list of them")
    ] = None,
    crons: Annotated[
        list[str] | None,
        typer.Option("--cron", help="a 5-field cron expression or @daily, @hourly...; repeatable"),
    ] = None,
    every: Annotated[
        list[str] | None, typer.Option("--every", help="an interval (30s, 5m, 1h); repeatable")
    ] = None,
    offset: Annotated[
        str | None, typer.Option("--offset", help="shifts every interval (1h with 15m: at :15)")
    ] = None,
    time_zone: Annotated[str, typer.Option("--time-zone", help="IANA zone the crons follow")] = "UTC",
    jitter: Annotated[
        str | None, typer.Option("--jitter", help="delay each action by up to this (spreads load)")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude-cron", help="times matching it are skipped; repeatable")
    ] = None,
    overlap: OverlapOption = None,
    catchup_window: Annotated[
        str | None,
        typer.Option("--catchup-window", help="after an outage, run actions missed by less than this"),
    ] = None,
    start_at: Annotated[str | None, typer.Option("--start-at", help="no action before this time")] = None,
    end_at: Annotated[str | None, typer.Option("--end-at", help="no action after this time")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="create it paused")] = False,
    note: Annotated[str, typer.Option("--note", help="why it is paused, or anything")] = "",
) -> None:
    """Create a schedule of NAMESPACE that starts WORKFLOW at each action time."""

    async def go() -> tuple[ScheduleDefinition, list[datetime]]:
        if not crons and not every:
            raise ScheduleError("give the action times: --cron EXPRESSION or --every INTERVAL")
        shift = parse_duration("--offset", offset) if offset else timedelta(0)
        spec = ScheduleSpec(
            crons=tuple(crons or ()),
            intervals=tuple(
                IntervalSpec(every=parse_duration("--every", value), offset=shift) for value in every or ()
            ),
            time_zone=time_zone,
            jitter=parse_duration("--jitter", jitter) if jitter else timedelta(0),
            exclude_crons=tuple(exclude or ()),
            start_at=parse_time("--start-at", start_at) if start_at else None,
            end_at=parse_time("--end-at", end_at) if end_at else None,
        )
        fields: dict[str, Any] = {
            "namespace": namespace,
            "schedule_id": schedule_id,
            "workflow_type": workflow_type,
            "args": parse_input(input),
            "spec": spec,
            "overlap": parse_overlap(overlap) or DEFAULT_OVERLAP_POLICY,
            "paused": paused,
            "note": note,
        }
        if catchup_window is not None:
            fields["catchup_window"] = parse_duration("--catchup-window", catchup_window)
        try:
            definition = ScheduleDefinition(**fields)
        except ValidationError as exc:
            raise ScheduleError(first_error(exc)) from None
        await create_schedule(get_settings(), definition)
        return definition, next_action_times(spec, datetime.now(UTC), 3)

    definition, upcoming = run_command("schedule create", go())
    state = "paused" if definition.paused else "active"
    typer.echo(
        f"schedule {schedule_id} created in namespace {namespace} ({state}): "
        f"{spec_summary(definition.spec)}, starting {workflow_type}, overlap {definition.overlap}"
    )
    if upcoming:
        typer.echo("next action times: " + ", ".join(time.isoformat() for time in upcoming))


@schedule_app.command("list")
def list_(namespace: str, as_json: JsonOption = False) -> None:
    """The namespace's schedules: id, workflow type, when, active or paused."""
    schedules = run_command("schedule list", list_schedules(get_settings(), namespace))
    if as_json:
        typer.echo(json.dumps(schedules, indent=2))
        return
    if not schedules:
        typer.echo(f"no schedules in namespace {namespace}")
    for schedule in schedules:
        typer.echo(
            f"{schedule['schedule']}\t{schedule['workflow_type']}\t{schedule['spec']}\t{schedule['state']}"
            + ("" if schedule["status"] == "running" else f"\t(workflow {schedule['status']})")
        )


@schedule_app.command("describe")
def describe(namespace: str, schedule_id: str, as_json: JsonOption = False) -> None:
    """The schedule: what it starts and when, its policies, next action times, counts, recent actions and
    skips."""
    echo_document(
        run_command("schedule describe", describe_schedule(get_settings(), namespace, schedule_id)), as_json
    )


def _request(
    command: RequestKind, namespace: str, schedule_id: str, fields: Callable[[], dict[str, Any]] = dict
) -> None:
    """Send a request and print what became of it; ``fields`` is read inside the command, so that bad
    input is refused like every other error."""

    async def go() -> str:
        try:
            request: ScheduleRequest = new_request(command, **fields())
        except ValidationError as exc:
            raise ScheduleError(first_error(exc)) from None
        return await send_request(get_settings(), namespace, schedule_id, request)

    outcome = run_command(f"schedule {command}", go())
    typer.echo(f"schedule {schedule_id}: {outcome}")


@schedule_app.command("pause")
def pause(
    namespace: str,
    schedule_id: str,
    note: Annotated[str, typer.Option("--note", help="why (shown by describe)")] = "",
) -> None:
    """Stop taking scheduled actions (each is counted as skipped) until unpaused; trigger and backfill
    still run."""
    _request("pause", namespace, schedule_id, lambda: {"note": note})


@schedule_app.command("unpause")
def unpause(
    namespace: str,
    schedule_id: str,
    note: Annotated[str, typer.Option("--note", help="why (shown by describe)")] = "",
) -> None:
    _request("unpause", namespace, schedule_id, lambda: {"note": note})


@schedule_app.command("trigger")
def trigger(namespace: str, schedule_id: str, overlap: OverlapOption = None) -> None:
    """Take an action now (through the schedule's overlap policy, or --overlap), paused or not."""
    _request("trigger", namespace, schedule_id, lambda: {"overlap": parse_overlap(overlap)})


@schedule_app.command("backfill")
def backfill(
    namespace: str,
    schedule_id: str,
    start: Annotated[str, typer.Option("--from", help="first time (inclusive): ISO with offset, or now-1h")],
    end: Annotated[str, typer.Option("--to", help="last time (inclusive)")],
    overlap: OverlapOption = None,
) -> None:
    """Take, now, the actions of the schedule's times in [--from, --to], through --overlap (default: the
    schedule's policy; with skip only the first of overlapping actions runs, with allow_all or buffer_all
    they all do)."""
    _request(
        "backfill",
        namespace,
        schedule_id,
        lambda: {
            "start": parse_time("--from", start),
            "end": parse_time("--to", end),
            "overlap": parse_overlap(overlap),
        },
    )


@schedule_app.command("delete")
def delete(namespace: str, schedule_id: str) -> None:
    """End the schedule; runs it started go on."""
    _request("delete", namespace, schedule_id)
