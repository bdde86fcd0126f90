"""The rules of starting a run, the same for the cell's engine, admission and the local environment:
the run id a start takes, and ``decide_start``, what a start does given the workflow id's latest run and
its id-reuse policy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from perdure.platform.core import messages as m
from perdure.platform.core.run_state import RunState, RunStatus

IdReusePolicy = Literal["allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate"]
# The closes after which "allow_duplicate_failed_only" starts the id again (Temporal's: all but success).
_FAILED_CLOSES: frozenset[RunStatus] = frozenset({"failed", "canceled", "terminated", "timed_out"})


def fresh_run_id(namespace: str, workflow_id: str, request_id: str) -> str:
    """Deterministic, so a redelivered start creates the same run id and is recognised as a duplicate."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"perdure:{namespace}/{workflow_id}/{request_id}"))


@dataclass(frozen=True)
class StartNewRun:
    run_id: str


@dataclass(frozen=True)
class AnswerWithRun:
    """The start was applied before (a redelivery, or a client sending its request again): the run it
    created is the answer, and nothing starts again."""

    run_id: str


@dataclass(frozen=True)
class SignalRun:
    """A signal-with-start that met an open run: only its signal goes in, to ``run_id``."""

    run_id: str
    signal: m.SignalWorkflow


@dataclass(frozen=True)
class RefuseStart:
    """Already started: ``run_id`` is the run in the way (running, or closed and not to be reused)."""

    run_id: str
    reason: str


StartDecision = StartNewRun | AnswerWithRun | SignalRun | RefuseStart


def decide_start(
    latest: RunState | None,
    start: m.StartWorkflow,
    policy: IdReusePolicy,
    *,
    run_id: str,
    applied_before: bool,
) -> StartDecision:
    """What ``start`` does, given the latest run of its workflow id and the id-reuse policy.

    ``run_id`` is the id a new run would take (``fresh_run_id`` of the request, or the one a
    continue-as-new chose); ``applied_before`` says a run with that id exists already. The workflow id
    has at most one open run: a run that continued as new counts as open until its next run starts.
    """
    if applied_before:
        return AnswerWithRun(run_id)
    if start.continued_from_run_id is not None:
        return StartNewRun(run_id)  # the next run of a chain: its id was never free
    if latest is None:
        return StartNewRun(run_id)
    workflow_id = start.workflow_id
    open_run_id = open_run_of(latest)
    if open_run_id is not None:
        if start.signal_name is not None:
            signal = m.SignalWorkflow(
                request_id=start.request_id, signal_name=start.signal_name, input=start.signal_input
            )
            return SignalRun(open_run_id, signal)
        running = f"run {open_run_id}"
        if open_run_id != latest.run_id:
            running += f", continued from run {latest.run_id}"
        return RefuseStart(open_run_id, f"workflow {workflow_id!r} is already running ({running})")
    if policy == "allow_duplicate" or (
        policy == "allow_duplicate_failed_only" and latest.status in _FAILED_CLOSES
    ):
        return StartNewRun(run_id)
    return RefuseStart(
        latest.run_id,
        f"workflow id {workflow_id!r} was used (run {latest.run_id}, {latest.status}) and the reuse "
        f"policy {policy!r} forbids it",
    )


def open_run_of(latest: RunState) -> str | None:
    """The run of the workflow id that is open, if any: the latest, or the next run of a chain that
    continued as new (its start is on its way)."""
    if latest.is_open:
        return latest.run_id
    if latest.status == "continued_as_new":
        return latest.new_run_id or latest.run_id
    return None
