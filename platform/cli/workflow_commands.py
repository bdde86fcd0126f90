"""``perdure workflow start | list | describe | history | query | signal | update | cancel | terminate |
reset | redrive``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.cli.batch_commands import batch_app
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
    query: Annotated[
        str | None,
        typer.Option(
            "--query", help="a visibility query, e.g. \"CustomerId = 'c-42' ORDER BY StartTime DESC\""
        ),
    ] = None,
) -> None:
    """Runs of the namespace, newest first: by --status and --type, or by a --query (docs/visibility.md)."""
    if query is not None and (status is not None or type is not None):
        raise typer.BadParameter("--query says the status and type too: give it alone")
    if query is not None:
        text = query
        runs = _with_client("list", namespace, lambda c: _searched(c, text, limit))
    else:
        runs = _with_client(
            "list", namespace, lambda c: c.list(status=status, workflow_type=type, limit=limit)
        )
    for run in runs:
        typer.echo(
            f"{run['workflow_id']}\t{run['workflow_type']}\t{run['status']}\t{run['_id']}\t"
            f"{run['start_time'].isoformat()}"
        )


async def _searched(client: OpsClient, query: str, limit: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    token: str | None = None
    while len(runs) < limit:
        page = await client.search(query, limit=min(limit - len(runs), 1000), page_token=token)
        runs.extend(page.runs)
        token = page.next_page_token
        if token is None:
            break
    return runs


@workflow_app.command("count")
def count_runs(
    namespace: str,
    query: Annotated[str, typer.Option("--query", help="a visibility query; all runs without one")] = "",
) -> None:
    """How many runs of the namespace a visibility query matches (docs/visibility.md)."""
    typer.echo(_with_client("count", namespace, lambda c: c.count(query)))


RunIdOption = Annotated[
    str | None, typer.Option("--run-id", help="a run of the workflow (default: its latest)")
]


@workflow_app.command("describe")
def describe(
    namespace: str, workflow_id: str, as_json: JsonOption = False, run_id: RunIdOption = None
) -> None:
    """The latest run of WORKFLOW_ID (or --run-id): status, pending work, result or failure, why it is
    parked, and the chain of runs (new_run_id, reset_run_id, reset_from_run_id, reset_point)."""
    description = _with_client("describe", namespace, lambda c: c.describe(workflow_id, run_id))
    echo_document(description, as_json)


@workflow_app.command("history")
def history(
    namespace: str,
    workflow_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    run_id: RunIdOption = None,
) -> None:
    """The event history of the latest run of WORKFLOW_ID (or --run-id); a reset shows as its event,
    with the run it came from."""
    events = _with_client("history", namespace, lambda c: c.history(workflow_id, run_id))
    if as_json:
        typer.echo(json.dumps(h.history_to_json(events), indent=2))
        return
    for event in events:
        line = f"{event.event_id:>5}  {event.timestamp.isoformat()}  {event.type}"
        if isinstance(event, h.WorkflowExecutionReset):
            line += f"  from run {event.reset_from_run_id} event {event.reset_point}"
            line += f" ({event.reapplied_signals} signals carried over)"
            line += f": {event.reason}" if event.reason else ""
        elif isinstance(event, h.WorkflowExecutionTerminated) and event.new_run_id:
            line += f"  reset into run {event.new_run_id}"
        typer.echo(line)


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


@workflow_app.command("reset")
def reset(
    namespace: str,
    workflow_id: str,
    to: Annotated[str, typer.Option("--to", help="an event id, first-workflow-task or last-workflow-task")],
    run_id: RunIdOption = None,
    reason: Annotated[str, typer.Option("--reason")] = "",
    no_reapply_signals: Annotated[
        bool, typer.Option("--no-reapply-signals", help="drop the signals received after the point")
    ] = False,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="names the reset: sent again, it resets once")
    ] = None,
) -> None:
    """Reset WORKFLOW_ID's latest run (or --run-id) to a point of its history: a new run replays the
    history up to it and goes on from there; the old run, if open, is terminated (docs/reset.md).
    Prints the new run's id."""
    target: int | str = int(to) if to.lstrip("-").isdigit() else to
    new_run_id = _with_client(
        "reset",
        namespace,
        lambda c: c.reset(
            workflow_id,
            target,
            run_id=run_id,
            reason=reason,
            reapply_signals=not no_reapply_signals,
            request_id=request_id,
        ),
    )
    typer.echo(new_run_id)


@workflow_app.command("redrive")
def redrive(namespace: str, workflow_id: str) -> None:
    """Replay a parked run with the app's current code."""
    _with_client("redrive", namespace, lambda c: c.redrive(workflow_id))
    typer.echo(f"redrive requested for {workflow_id}")


workflow_app.add_typer(batch_app, name="batch")
