"""A run's newest events ride in its run document's tail, which grows write after write until it passes
``TAIL_BYTES`` and is then copied into the history collection after the write; the run's next write
begins a new tail, so it may not go ahead of that copy, however often the copy fails (a database outage
lasting several writes). A short run's history needs no copy at all."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from perdure.platform.core import history as h
from perdure.platform.core.state_machine import ExecutionStateMachine, Transition
from perdure.platform.stores import run_store
from perdure.platform.stores.run_store import RunEntry, RunStore

from . import run_writes as writes

OFFSETS = {0: (0, 0)}


async def _started(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> tuple[RunStore, ExecutionStateMachine, dict[int, int], Transition, RunEntry]:
    """A store on the test's database and a run's start (and first workflow task), not yet written."""
    store = RunStore(mongo_db)
    await store.ensure_indexes()
    machine = writes.machine()
    epochs = {0: await store.take_partition(0)}
    started = writes.start(machine, writes.three_steps())
    entry = writes.absorb(RunEntry(state=started.state, partition=0, persisted_next_event_id=1), started)
    return store, machine, epochs, started, entry


async def test_a_batch_whose_copy_failed_twice_is_copied_before_its_tail_is_replaced(
    mongo_db: AsyncDatabase[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_store, "TAIL_BYTES", 0)  # every write's tail is copied out
    store, machine, epochs, started, entry = await _started(mongo_db)
    await store.write([entry], epochs, OFFSETS)
    await store.settle_copies()
    entry.reset_changes()

    # The history collection becomes unreachable (a server nothing answers on): the copy of the next
    # write's tail fails, and so does copying it again before the write after.
    history = store.history
    unreachable: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:9", serverSelectionTimeoutMS=300
    )
    try:
        store.history = unreachable[mongo_db.name]["history"]
        completed = machine.handle(entry.state, writes.completed(entry, 2))
        writes.absorb(entry, completed)
        await store.write([entry], epochs, OFFSETS)
        copied_up_to = entry.persisted_next_event_id
        entry.reset_changes()
        writes.absorb(entry, writes.decide(machine, completed, [*started.events, *completed.events]))
        with pytest.raises(PyMongoError):
            await store.write([entry], epochs, OFFSETS)
    finally:
        store.history = history
        await unreachable.close()

    # The database is back; the same write is made again (as the engine retries a batch).
    await store.write([entry], epochs, OFFSETS)
    await store.settle_copies()

    events = await store.read_history(entry.state.run_id)
    assert [e.event_id for e in events] == list(range(1, entry.state.next_event_id))
    assert entry.state.next_event_id > copied_up_to
    stored = {d["first_event_id"] async for d in mongo_db["history"].find({"run_id": entry.state.run_id})}
    document = await store.run(entry.state.run_id)
    assert document is not None
    assert stored == set(document["batch_starts"])


async def _batches_of(mongo_db: AsyncDatabase[dict[str, Any]], run_id: str) -> list[int]:
    return sorted([d["first_event_id"] async for d in mongo_db["history"].find({"run_id": run_id})])


async def test_a_short_history_rides_in_the_run_document_until_its_tail_passes_the_bound(
    mongo_db: AsyncDatabase[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, machine, epochs, started, entry = await _started(mongo_db)
    run_id = entry.state.run_id
    history = list(started.events)

    async def step(entry: RunEntry) -> RunEntry:
        """The next activity's result and the commands that follow it, as two writes."""
        scheduled = max(e.event_id for e in history if isinstance(e, h.ActivityTaskScheduled))
        completed = machine.handle(entry.state, writes.completed(entry, scheduled))
        await store.write([writes.absorb(entry, completed)], epochs, OFFSETS)
        entry.reset_changes()
        history.extend(completed.events)
        decided = writes.decide(machine, completed, history)
        await store.write([writes.absorb(entry, decided)], epochs, OFFSETS)
        await store.settle_copies()
        entry.reset_changes()
        history.extend(decided.events)
        return entry

    await store.write([entry], epochs, OFFSETS)
    entry.reset_changes()
    entry = await step(entry)
    # Three writes, no copy: the history is the document's tail alone, and reads whole.
    assert await _batches_of(mongo_db, run_id) == []
    assert [e.event_id for e in await store.read_history(run_id)] == list(range(1, len(history) + 1))

    # Loaded again (a crash, another owner), the run goes on with the tail it had; past the bound, the
    # tail is copied out and the next write begins a new one.
    document = await store.run(run_id)
    assert document is not None and document["tail"]["first_event_id"] == 1
    await store.flush_tail(document)  # as a loader does: a tail still growing is not copied
    assert await _batches_of(mongo_db, run_id) == []
    reloaded = store.entry_of(document)
    assert len(reloaded.tail) == len(history)
    monkeypatch.setattr(run_store, "TAIL_BYTES", 0)
    before = len(history)
    reloaded = await step(reloaded)
    document = await store.run(run_id)
    assert document is not None
    # The first write's tail (the old one and its events) was copied out, then the second's on its own.
    assert document["batch_starts"][0] == 1 and before + 1 < document["batch_starts"][1] <= len(history)
    assert await _batches_of(mongo_db, run_id) == document["batch_starts"]
    events = await store.read_history(run_id)
    assert [e.event_id for e in events] == list(range(1, len(history) + 1))
    assert events == history
