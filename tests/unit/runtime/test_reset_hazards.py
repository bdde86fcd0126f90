"""Review of workflow reset (issue 15 part 3): each test states a property reset must have and fails
while it does not. Pure: the state machine, the engine's apply step on a cache built by hand, the
local environment; no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import bson
import pytest
from aiokafka import ConsumerRecord

from perdure.platform.cell.engine import CellEngine, Group, PartitionCache
from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.payloads import default_converter
from perdure.platform.core.run_state import RunLimits, rebuild_state
from perdure.platform.core.state_machine import (
    MAX_BUFFERED_SIGNAL_BYTES,
    MAX_BUFFERED_SIGNALS,
    ExecutionStateMachine,
)
from perdure.platform.protocol.cell_wire import TaskEnvelope
from perdure.platform.stores.namespace_apps import LoadedNamespace
from perdure.platform.stores.run_store import RunEntry, _state_document
from perdure.tenants import App, workflow
from perdure.tenants.testing import LocalEnvironment

T0 = datetime(2026, 12, 1, tzinfo=UTC)
# What a MongoDB server (and FerretDB v1) stores in one document at most.
MAX_BSON_DOCUMENT = 16 * 1024 * 1024


class History:
    def __init__(self) -> None:
        self.events: list[h.HistoryEvent] = []

    def add(self, event_type: type[Any], **fields: Any) -> int:
        event_id = len(self.events) + 1
        self.events.append(
            event_type(event_id=event_id, timestamp=T0 + timedelta(seconds=event_id), **fields)
        )
        return event_id


def _started(history: History, run_id: str = "old", **fields: Any) -> int:
    return history.add(
        h.WorkflowExecutionStarted,
        workflow_type="Flow",
        workflow_id="wf",
        run_id=run_id,
        namespace="ns",
        **fields,
    )


def _machine() -> ExecutionStateMachine:
    return ExecutionStateMachine(clock=lambda: T0 + timedelta(days=1), new_id=lambda: "unused")


# -- a reset child ---------------------------------------------------------------------------------


def test_resetting_a_child_does_not_tell_its_parent_the_child_was_terminated() -> None:
    """The new run goes on in the old one's place (docs/reset.md) and keeps the parent reference, so it
    reports its close to the parent. The old run's termination must not report first: the parent would
    record the child as terminated, and the new run's real outcome would be a 'stale child close'."""
    parent = h.ParentRef(namespace="ns", workflow_id="parent", run_id="p-run", initiated_event_id=5)
    history = History()
    _started(history, parent=parent)
    point = history.add(h.WorkflowExecutionSignaled, signal_name="go", request_id="s1")
    state = rebuild_state(history.events)
    done = _machine().reset(state, history.events, m.ResetWorkflow(request_id="r", to=point), "new")

    told = [e for e in done.old_run.outbox if isinstance(e, o.NotifyParent)]
    assert [e.message.outcome for e in told] == [], "the parent hears 'terminated' from the reset"


# -- bounds ------------------------------------------------------------------------------------------


def _signalled_history(count: int, payload_bytes: int) -> History:
    history = History()
    _started(history)
    for i in range(count):
        history.add(
            h.WorkflowExecutionSignaled,
            signal_name="note",
            request_id=f"s-{i}",
            input=default_converter.to_payloads(["x" * payload_bytes]),
        )
    return history


def test_carried_over_signals_are_held_to_the_bounds_of_waiting_signals() -> None:
    """A run holds at most MAX_BUFFERED_SIGNALS signals (and MAX_BUFFERED_SIGNAL_BYTES of them) waiting
    for its code; a client's signal past that is refused. A reset to the first workflow task puts every
    signal the old run ever took into the new run's waiting list at once, unchecked."""
    history = _signalled_history(MAX_BUFFERED_SIGNALS + 200, 8 * 1024)
    state = rebuild_state(history.events)
    done = _machine().reset(
        state, history.events, m.ResetWorkflow(request_id="r", to="first-workflow-task"), "new"
    )
    waiting = [s for s in done.new_run.state.buffered if isinstance(s, m.SignalWorkflow)]
    size = sum(len(p.data) for s in waiting for p in s.input)
    assert len(waiting) <= MAX_BUFFERED_SIGNALS and size <= MAX_BUFFERED_SIGNAL_BYTES, (
        f"{len(waiting)} signals of {size} bytes wait for the new run's code"
    )


@pytest.mark.parametrize("to", ["first-workflow-task", "last-workflow-task"])
def test_the_new_runs_first_write_fits_in_one_database_document(to: str) -> None:
    """A run well inside its history limit (~20 MB of 50 MB, 80 signals of 256 kB: the namespace's
    default payload limit) is reset. The engine writes the new run as ONE run document holding the whole
    copied prefix as its tail (or every carried-over signal in its state) and ONE history batch: past
    16 MB the server refuses the insert, the batch fails, is rewound and read again, and fails again:
    the cell process's engine stops for every tenant (invariants 6 and 8)."""
    history = _signalled_history(80, 256 * 1024)
    state = rebuild_state(history.events)
    assert state.history_size < RunLimits().max_bytes
    done = _machine().reset(state, history.events, m.ResetWorkflow(request_id="r", to=to), "new")
    entry = RunEntry(state=done.new_run.state, partition=0, persisted_next_event_id=1)
    entry.new_events = list(done.new_run.events)
    entry.new_outbox = list(done.new_run.outbox)
    document = {"_id": "new", **_state_document(entry, epoch=1), "batch_starts": [1]}
    size = len(bson.encode(document))
    assert size <= MAX_BSON_DOCUMENT, f"the new run's document is {size} bytes"


# -- continue-as-new ---------------------------------------------------------------------------------


class _NoNamespaces:
    def loaded(self, namespace: str) -> None:
        return None


def _bare_engine() -> CellEngine:
    """The engine's apply step without its services: ``_apply`` uses the machine and the caches only."""
    engine = object.__new__(CellEngine)
    engine.apps = cast(Any, _NoNamespaces())
    engine.machine = ExecutionStateMachine(
        clock=lambda: T0 + timedelta(days=1), new_id=lambda: "unused", limits_of=engine._limits_of
    )
    engine.caches = {0: PartitionCache()}
    return engine


def test_a_reset_of_a_run_that_just_continued_as_new_leaves_one_open_run() -> None:
    """Run A continued as new into X; X's start is on its way through the partition (the outbox that
    carries it is sent after A's write), and a reset queued before it. ``decide_start`` counts A as open
    until X starts, but the reset only asks ``is_open``: it makes run N, then X's start (which always
    starts: 'its id was never free') makes X. Two open runs of one workflow id."""
    history = History()
    _started(history, run_id="A")
    point = history.add(h.WorkflowExecutionSignaled, signal_name="go", request_id="s1")
    history.add(h.WorkflowExecutionContinuedAsNew, new_run_id="X", workflow_type="Flow")
    a = RunEntry(state=rebuild_state(history.events), partition=0, persisted_next_event_id=4)
    a.history = list(history.events)
    engine = _bare_engine()
    cache = engine.caches[0]
    cache.put(("ns", "wf"), a, latest=True)

    continued = m.StartWorkflow(
        request_id="A/continue", workflow_type="Flow", workflow_id="wf", continued_from_run_id="A"
    )
    group = Group(("ns", "wf"), 0)
    group.namespace = LoadedNamespace(record=cast(Any, object()))
    reset = TaskEnvelope(namespace="ns", workflow_id="wf", message=m.ResetWorkflow(request_id="r", to=point))
    start = TaskEnvelope(namespace="ns", workflow_id="wf", run_id="X", message=continued)
    no_record = cast(ConsumerRecord[bytes, bytes], None)  # _apply reads the envelopes only
    group.items = [(no_record, reset), (no_record, start)]
    touched: dict[str, RunEntry] = {}
    engine._apply(group, touched, [], [], [])
    open_runs = sorted(run_id for run_id, entry in cache.by_run.items() if entry.state.is_open)
    assert len(open_runs) <= 1, f"open runs of workflow 'wf': {open_runs}"


# -- randomness after the point ----------------------------------------------------------------------

app = App("reset-review")


@app.workflow
class Ticket:
    """Waits for a signal, then draws an id (as code does for an idempotency key or a child's id)."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return str(workflow.uuid4())

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


async def test_a_reset_run_draws_new_randomness_after_the_point() -> None:
    """Temporal gives a reset run a new random seed from the reset point on (the SDK's
    UpdateRandomSeed), so ids drawn after the point differ from the old run's: an id the old run used
    as an idempotency key or a child's workflow id is not drawn again. Here the new run seeds from the
    first run's id for its whole life, and the decisions it makes again draw the very same ids."""
    async with LocalEnvironment(app) as env:
        handle = await env.start_workflow(Ticket.run, id="t")
        await handle.signal(Ticket.proceed)
        old = await handle.result()
        await handle.reset(1)  # the start: the code decides everything again
        new = await handle.result()
    assert new != old, f"the reset run drew the old run's id {old}"
