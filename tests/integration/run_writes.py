"""Run writes as one engine batch would make them, for tests of the run store without a cell: a start
with its first workflow task run in this process (as a worker would), and the messages that follow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.history import HistoryEvent
from perdure.platform.core.payloads import default_converter
from perdure.platform.core.state_machine import ExecutionStateMachine, Transition
from perdure.platform.core.workflow_activations import WorkflowActivations
from perdure.platform.stores.run_store import RunEntry

from .cell_app import app


def machine() -> ExecutionStateMachine:
    return ExecutionStateMachine(clock=lambda: datetime.now(UTC), new_id=lambda: str(uuid.uuid4()))


def start(machine: ExecutionStateMachine, message: m.StartWorkflow, run_id: str | None = None) -> Transition:
    """The start and its first workflow task: one transition with the events, outbox and state of both."""
    started = machine.start("ns", message, run_id=run_id)
    completed = decide(machine, started, started.events)
    return Transition(
        completed.state, [*started.events, *completed.events], [*started.outbox, *completed.outbox]
    )


def decide(machine: ExecutionStateMachine, transition: Transition, history: list[HistoryEvent]) -> Transition:
    """The workflow task ``transition`` dispatches, run on the run's ``history`` and its reply applied."""
    task = next(e for e in transition.outbox if isinstance(e, o.DispatchWorkflowTask))
    reply = WorkflowActivations(app).activate(task, history).reply
    assert reply is not None
    return machine.handle(transition.state, reply)


def absorb(entry: RunEntry, transition: Transition) -> RunEntry:
    """The entry with the transition as its next write."""
    entry.state = transition.state
    entry.new_events, entry.new_outbox = list(transition.events), list(transition.outbox)
    entry.state_changed = True
    return entry


def completed(entry: RunEntry, scheduled: int) -> m.ActivityCompleted:
    return m.ActivityCompleted(
        run_id=entry.state.run_id,
        scheduled_event_id=scheduled,
        attempt=1,
        result=default_converter.to_payload("done"),
    )


def three_steps(workflow_id: str = "w") -> m.StartWorkflow:
    return m.StartWorkflow(
        request_id="r",
        workflow_type="ThreeSteps",
        workflow_id=workflow_id,
        input=default_converter.to_payloads(["/dev/null", "z"]),
    )
