"""Zombie writers: a process that lost its partition cannot fork a run's history (invariants 2 and 3)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.payloads import default_converter
from perdure.platform.core.state_machine import ExecutionStateMachine, Transition
from perdure.platform.core.workflow_activations import WorkflowActivations
from perdure.platform.stores.run_store import FencedError, RunEntry, RunStore

from .cell_app import app

# Offsets of the (imagined) Kafka records each write applies, by partition.
OFFSETS = {0: (0, 0), 3: (0, 0)}


def _machine() -> ExecutionStateMachine:
    return ExecutionStateMachine(clock=lambda: datetime.now(UTC), new_id=lambda: str(uuid.uuid4()))


def _start(machine: ExecutionStateMachine, start: m.StartWorkflow, run_id: str | None = None) -> Transition:
    """The start and its first workflow task, run in this process (as a worker would): one transition
    with the events, outbox and state of both, as one engine batch would write them."""
    started = machine.start("ns", start, run_id=run_id)
    task = next(e for e in started.outbox if isinstance(e, o.DispatchWorkflowTask))
    reply = WorkflowActivations(app).activate(task, started.events).reply
    assert reply is not None
    completed = machine.handle(started.state, reply)
    return Transition(
        completed.state, [*started.events, *completed.events], [*started.outbox, *completed.outbox]
    )


def _absorb(entry: RunEntry, transition: Transition) -> RunEntry:
    entry.state = transition.state
    entry.new_events, entry.new_outbox = list(transition.events), list(transition.outbox)
    entry.state_changed = True
    return entry


def _completed(entry: RunEntry, scheduled: int) -> m.ActivityCompleted:
    return m.ActivityCompleted(
        run_id=entry.state.run_id,
        scheduled_event_id=scheduled,
        attempt=1,
        result=default_converter.to_payload("done"),
    )


async def test_a_writer_with_an_older_epoch_is_refused(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    store = RunStore(mongo_db)
    await store.ensure_indexes()
    machine = _machine()
    old_epoch = await store.take_partition(0)
    start = m.StartWorkflow(
        request_id="r",
        workflow_type="ThreeSteps",
        workflow_id="w",
        input=default_converter.to_payloads(["/dev/null", "z"]),
    )
    started = _start(machine, start)
    entry = _absorb(RunEntry(state=started.state, partition=0, persisted_next_event_id=1), started)
    await store.write([entry], {0: old_epoch}, OFFSETS)
    zombie = entry
    zombie.reset_changes()

    # A new owner takes the partition and appends the next step.
    new_epoch = await store.take_partition(0)
    assert new_epoch > old_epoch
    document = await store.run(entry.state.run_id)
    assert document is not None
    owner = store.entry_of(document)
    owner_history = await store.read_history(owner.state.run_id, document)
    _absorb(owner, machine.handle(owner.state, _completed(owner, 2)))
    await store.write([owner], {0: new_epoch}, OFFSETS)

    # The zombie, unaware, appends its own version of the same step: refused.
    _absorb(zombie, machine.handle(zombie.state, _completed(zombie, 2)))
    with pytest.raises(FencedError):
        await store.write([zombie], {0: old_epoch}, OFFSETS)

    # Even a zombie that caught up on next_event_id is refused by its epoch.
    document = await store.run(entry.state.run_id)
    assert document is not None
    caught_up = store.entry_of(document)
    _absorb(
        caught_up,
        machine.handle(caught_up.state, m.SignalWorkflow(request_id="s", signal_name="x")),
    )
    with pytest.raises(FencedError):
        await store.write([caught_up], {0: old_epoch}, OFFSETS)

    final = await store.read_history(entry.state.run_id)
    assert [e.event_id for e in final] == list(range(1, len(final) + 1))
    assert final[: len(owner_history)] == owner_history
    assert len(final) == owner.state.next_event_id - 1


async def test_a_duplicate_append_is_refused(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    store = RunStore(mongo_db)
    await store.ensure_indexes()
    machine = _machine()
    epoch = await store.take_partition(3)
    start = m.StartWorkflow(
        request_id="r",
        workflow_type="ThreeSteps",
        workflow_id="w",
        input=default_converter.to_payloads(["/dev/null", "z"]),
    )
    first = _start(machine, start, run_id="run-1")
    await store.write(
        [_absorb(RunEntry(state=first.state, partition=3, persisted_next_event_id=1), first)],
        {3: epoch},
        OFFSETS,
    )
    again = _start(machine, start, run_id="run-1")  # the same start delivered twice
    with pytest.raises(FencedError):
        duplicate = _absorb(RunEntry(state=again.state, partition=3, persisted_next_event_id=1), again)
        await store.write([duplicate], {3: epoch}, OFFSETS)
    assert len(await store.read_history("run-1")) == len(first.events)
