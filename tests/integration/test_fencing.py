"""Zombie writers: a process that lost its partition cannot fork a run's history (invariants 2 and 3)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from perdure.platform.core import messages as m
from perdure.platform.stores.run_store import FencedError, RunEntry, RunStore

from . import run_writes as writes

# Offsets of the (imagined) Kafka records each write applies, by partition.
OFFSETS = {0: (0, 0), 3: (0, 0)}


async def test_a_writer_with_an_older_epoch_is_refused(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    store = RunStore(mongo_db)
    await store.ensure_indexes()
    machine = writes.machine()
    old_epoch = await store.take_partition(0)
    start = writes.three_steps()
    started = writes.start(machine, start)
    entry = writes.absorb(RunEntry(state=started.state, partition=0, persisted_next_event_id=1), started)
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
    writes.absorb(owner, machine.handle(owner.state, writes.completed(owner, 2)))
    await store.write([owner], {0: new_epoch}, OFFSETS)

    # The zombie, unaware, appends its own version of the same step: refused.
    writes.absorb(zombie, machine.handle(zombie.state, writes.completed(zombie, 2)))
    with pytest.raises(FencedError):
        await store.write([zombie], {0: old_epoch}, OFFSETS)

    # Even a zombie that caught up on next_event_id is refused by its epoch.
    document = await store.run(entry.state.run_id)
    assert document is not None
    caught_up = store.entry_of(document)
    writes.absorb(
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
    machine = writes.machine()
    epoch = await store.take_partition(3)
    start = writes.three_steps()
    first = writes.start(machine, start, run_id="run-1")
    await store.write(
        [writes.absorb(RunEntry(state=first.state, partition=3, persisted_next_event_id=1), first)],
        {3: epoch},
        OFFSETS,
    )
    again = writes.start(machine, start, run_id="run-1")  # the same start delivered twice
    with pytest.raises(FencedError):
        duplicate = writes.absorb(RunEntry(state=again.state, partition=3, persisted_next_event_id=1), again)
        await store.write([duplicate], {3: epoch}, OFFSETS)
    assert len(await store.read_history("run-1")) == len(first.events)
