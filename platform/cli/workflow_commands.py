"""``perdure workflow start | list | describe | history | query | signal | update | cancel | terminate |
redrive``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.cli.document_output import JsonOption, echo_document
from perdure.platform.core import history as h
from perdure.platform.core.failures import ApplicationError
from perdure.platform.messaging.ops_client import OpsClient

workflow_app = typer.Typer(help="Start, inspect and steer workflows of a namespace.", no_args_is_help=True)
T = TypeVar("T")


def _with_client(name: str, namespace: str, action: Callable[[OpsClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with await OpsClient.connect(get_settings(), namespace) as client:
            return await action(client)

    return run_command(f"workflow {name}", go())


def _arguments(raw: str | None) -> list[Any]:
    if raw is None:
        return []
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise typer.BadParameter(f"--input is not JSON: {exc}") from None
    return value if isinstance(value, list) else [value]


@workflow_app.command("start")
def start(
    namespace: str,
    workflow_type: str,
    id: Annotated[str, typer.Option("--id")],
    input: Annotated[
        str | None, typer.Option("--input", help="JSON: one argument, or a list of them")
    ] = None,
) -> None:
    """Enqueue a start of WORKFLOW_TYPE (acknowledged by Kafka when this returns)."""
    args = _arguments(input)
    request = _with_client("start", namespace, lambda c: c.start_workflow(workflow_type, *args, id=id))
    typer.echo(f"started {workflow_type} {id} (request {request})")


@workflow_app.command("list")
def list_runs(
    namespace: str,
    status: Annotated[str | None, typer.Option("--status")] = None,
    type: Annotated[str | None, typer.Option("--type")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Runs of the namespace, newest first."""
    runs = _with_client("list", namespace, lambda c: c.list(status=status, workflow_type=type, limit=limit))
    for run in runs:
        typer.echo(
            f"{run['workflow_id']}\t{run['workflow_type']}\t{run['status']}\t{run['_id']}\t"
            f"{run['start_time'].isoformat()}"
        )


@workflow_app.command("describe")
def describe(namespace: str, workflow_id: str, as_json: JsonOption = False) -> None:
    """The latest run of WORKFLOW_ID: status, pending work, result or failure, why it is parked."""
    description = _with_client("describe", namespace, lambda c: c.describe(workflow_id))
    echo_document(description, as_json)


@workflow_app.command("history")
def history(
    namespace: str,
    workflow_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The event history of the latest run of WORKFLOW_ID."""
    events = _with_client("history", namespace, lambda c: c.history(workflow_id))
    if as_json:
        typer.echo(json.dumps(h.history_to_json(events), indent=2))
        return
    for event in events:
        typer.echo(f"{event.event_id:>5}  {event.timestamp.isoformat()}  {event.type}")


@workflow_app.command("query")
def query(
    namespace: str,
    workflow_id: str,
    name: str,
    input: Annotated[str | None, typer.Option("--input")] = None,
) -> None:
    """Ask a workflow through one of its queries (e.g. a twin: `perdure workflow query perdure-system
    namespace/acme current`); prints the answer as JSON."""
    args = _arguments(input)
    answer = _with_client("query", namespace, lambda c: c.query(workflow_id, name, *args))
    typer.echo(json.dumps(answer, indent=2, default=str))


@workflow_app.command("signal")
def signal(
    namespace: str,
    workflow_id: str,
    name: str,
    input: Annotated[str | None, typer.Option("--input")] = None,
) -> None:
    args = _arguments(input)
    _with_client("signal", namespace, lambda c: c.signal(workflow_id, name, *args))
    typer.echo(f"signalled {workflow_id}: {name}")


@workflow_app.command("update")
def update(
    namespace: str,
    workflow_id: str,
    name: str,
    input: Annotated[str | None, typer.Option("--input", help="JSON: an argument, or a list of them")] = None,
    update_id: Annotated[str | None, typer.Option("--id", help="the update's id (default: new)")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="seconds to wait")] = 60.0,
) -> None:
    """Run one of a workflow's update handlers and print its result as JSON. Sent again with the same
    --id, an update runs once and answers the same; a refused or failed update prints why."""
    args = _arguments(input)

    async def run_update(client: OpsClient) -> Any:
        try:
            return await client.update(workflow_id, name, *args, id=update_id, timeout=timeout)
        except TimeoutError:
            raise ApplicationError(
                f"no answer within {timeout:g} s (does a worker serve the namespace?)", type="Timeout"
            ) from None

    answer = _with_client("update", namespace, run_update)
    typer.echo(json.dumps(answer, indent=2, default=str))


@workflow_app.command("cancel")
def cancel(namespace: str, workflow_id: str, reason: str = "") -> None:
    _with_client("cancel", namespace, lambda c: c.cancel(workflow_id, reason))
    typer.echo(f"cancellation requested for {workflow_id}")


@workflow_app.command("terminate")
def terminate(namespace: str, workflow_id: str, reason: str = "") -> None:
    _with_client("terminate", namespace, lambda c: c.terminate(workflow_id, reason))
    typer.echo(f"termination requested for {workflow_id}")


@workflow_app.command("redrive")
def redrive(namespace: str, workflow_id: str) -> None:
    """Replay a parked run with the app's current code."""
    _with_client("redrive", namespace, lambda c: c.redrive(workflow_id))
    typer.echo(f"redrive requested for {workflow_id}")
