"""``perdure workflow batch terminate | cancel | signal | status | list | stop``: batch operations over
the runs of a namespace that a visibility query matches, each a ``Batch`` workflow of the system
namespace (``platform/control/batch_workflow.py``) that works through them at a bounded rate and survives
a crash of its cell. Bad input is refused before anything starts."""

from __future__ import annotations

import json
import re
import uuid
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.cli.document_output import JsonOption, echo_document
from perdure.platform.control.batch_requests import (
    BatchError,
    describe_batch,
    list_batches,
    start_batch,
    stop_batch,
)
from perdure.platform.protocol.batch_wire import (
    DEFAULT_RATE,
    BatchDefinition,
    BatchOperation,
    progress_text,
)
from perdure.platform.protocol.schedule_wire import first_error

batch_app = typer.Typer(
    help="Batch operations: terminate, cancel or signal every run a query matches, durably, at a rate.",
    no_args_is_help=True,
)
_RATE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*([smh]))?\s*")
_PER = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}

QueryOption = Annotated[
    str,
    typer.Option(
        "--query", help="the runs, in the visibility query language: ExecutionStatus = 'Running' AND ..."
    ),
]
RateOption = Annotated[
    str, typer.Option("--rate", help=f"runs a second (50, 50/s, 120/m); default {DEFAULT_RATE:g}/s")
]
IdOption = Annotated[
    str | None, typer.Option("--id", help="the batch's id in the namespace (default: a new one)")
]


def parse_rate(value: str) -> float:
    """``50``, ``50/s``, ``120/m``, ``3600/h``: runs a second."""
    match = _RATE.fullmatch(value.lower())
    if match is None:
        raise BatchError(f"--rate {value!r}: a number of runs a second (50, 50/s, 120/m, 3600/h)")
    return float(match.group(1)) / _PER[match.group(2)]


def _start(operation: BatchOperation, namespace: str, batch_id: str | None, rate: str, **fields: Any) -> None:
    async def go() -> tuple[BatchDefinition, int]:
        try:
            definition = BatchDefinition(
                namespace=namespace,
                batch_id=batch_id or f"b-{uuid.uuid4().hex[:12]}",
                operation=operation,
                rate=parse_rate(rate),
                **fields,
            )
        except ValidationError as exc:
            raise BatchError(first_error(exc)) from None
        started = await start_batch(get_settings(), definition)
        return definition, started.matching

    definition, matching = run_command(f"workflow batch {operation}", go())
    what = f"signal {definition.signal_name!r}" if operation == "signal" else operation
    typer.echo(
        f"batch {definition.batch_id} started in namespace {namespace}: {what} of the {matching} runs "
        f"matching {definition.query} (now), at {definition.rate:g}/s"
    )
    typer.echo(f"follow it: perdure workflow batch status {namespace} {definition.batch_id}")


@batch_app.command("terminate")
def terminate(
    namespace: str,
    query: QueryOption,
    reason: Annotated[str, typer.Option("--reason", help="recorded in each run's history")] = "",
    rate: RateOption = f"{DEFAULT_RATE:g}",
    batch_id: IdOption = None,
) -> None:
    """Terminate every run of NAMESPACE the query matches (runs closed already are skipped)."""
    _start("terminate", namespace, batch_id, rate, query=query, reason=reason)


@batch_app.command("cancel")
def cancel(
    namespace: str,
    query: QueryOption,
    reason: Annotated[str, typer.Option("--reason", help="recorded in each run's history")] = "",
    rate: RateOption = f"{DEFAULT_RATE:g}",
    batch_id: IdOption = None,
) -> None:
    """Request the cancellation of every run of NAMESPACE the query matches."""
    _start("cancel", namespace, batch_id, rate, query=query, reason=reason)


@batch_app.command("signal")
def signal(
    namespace: str,
    query: QueryOption,
    name: Annotated[str, typer.Option("--name", help="the signal's name")],
    input: Annotated[
        str | None, typer.Option("--input", help="JSON: the signal's one argument, or a list of them")
    ] = None,
    rate: RateOption = f"{DEFAULT_RATE:g}",
    batch_id: IdOption = None,
) -> None:
    """Send a signal to every run of NAMESPACE the query matches (once each, whatever crashes)."""
    args: list[Any] = []
    if input is not None:
        try:
            parsed = json.loads(input)
        except ValueError as exc:
            typer.echo(f"perdure workflow batch signal: --input is not JSON: {exc}", err=True)
            raise typer.Exit(1) from None
        args = parsed if isinstance(parsed, list) else [parsed]
    _start("signal", namespace, batch_id, rate, query=query, signal_name=name, signal_input=args)


@batch_app.command("status")
def status(namespace: str, batch_id: str, as_json: JsonOption = False) -> None:
    """The batch: what it does to which runs, how fast, its state, counts, times and last error."""
    described = run_command("workflow batch status", describe_batch(get_settings(), namespace, batch_id))
    if not as_json:
        described = {"progress": progress_text(described["counts"]), **described}
    echo_document(described, as_json)


@batch_app.command("list")
def list_(namespace: str, as_json: JsonOption = False) -> None:
    """The namespace's batches, newest first: id, operation, state, progress."""
    batches = run_command("workflow batch list", list_batches(get_settings(), namespace))
    if as_json:
        typer.echo(json.dumps(batches, indent=2))
        return
    if not batches:
        typer.echo(f"no batches in namespace {namespace}")
    for batch in batches:
        typer.echo(
            f"{batch['batch']}\t{batch['operation']}\t{batch['state']}\t{progress_text(batch['counts'])}"
        )


@batch_app.command("stop")
def stop(
    namespace: str,
    batch_id: str,
    reason: Annotated[str, typer.Option("--reason", help="why (shown by status)")] = "",
) -> None:
    """Stop a batch after the page it is on; the runs it reached stay as they are."""
    described = run_command("workflow batch stop", stop_batch(get_settings(), namespace, batch_id, reason))
    typer.echo(f"batch {batch_id}: {described['state']}, {progress_text(described['counts'])}")
