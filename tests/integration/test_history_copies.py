"""A write's history batch rides in its run document's tail and is copied into the history collection
after the write; the run's next write replaces the tail, so it may not go ahead of that copy, however
often the copy fails (a database outage lasting several writes)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from perdure.platform.stores.run_store import RunEntry, RunStore

from . import run_writes as writes

OFFSETS = {0: (0, 0)}


async def test_a_batch_whose_copy_failed_twice_is_copied_before_its_tail_is_replaced(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = RunStore(mongo_db)
    await store.ensure_indexes()
    machine = writes.machine()
    epochs = {0: await store.take_partition(0)}
    started = writes.start(machine, writes.three_steps())
    entry = writes.absorb(RunEntry(state=started.state, partition=0, persisted_next_event_id=1), started)
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
