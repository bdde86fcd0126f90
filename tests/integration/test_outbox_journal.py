"""The outbox journal: which outboxes a new owner of a partition must send again (invariant 4 of
docs/architecture.md)."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.payloads import default_converter
from perdure.platform.stores.run_store import RunEntry, RunStore

from . import run_writes as writes


def _start(workflow_id: str) -> m.StartWorkflow:
    return m.StartWorkflow(
        request_id=f"r-{workflow_id}",
        workflow_type="ThreeSteps",
        workflow_id=workflow_id,
        input=default_converter.to_payloads(["/dev/null", workflow_id]),
    )


async def test_only_outboxes_of_uncommitted_writes_are_sent_again(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = RunStore(mongo_db)
    await store.ensure_indexes()
    machine = writes.machine()
    epoch = await store.take_partition(0)

    # Batch at offsets 0..1 starts two runs; both dispatch their first activity.
    entries = []
    for workflow_id in ("a", "b"):
        started = writes.start(machine, _start(workflow_id))
        entries.append(
            writes.absorb(RunEntry(state=started.state, partition=0, persisted_next_event_id=1), started)
        )
    first_batch = await store.write(entries, {0: epoch}, {0: (0, 1)})
    assert len(first_batch) == 1  # one journal entry per partition of the batch

    # Not committed yet: a new owner sends both outboxes again.
    journal, unsent = await store.pending_outboxes(0, committed=None)
    assert journal == first_batch
    assert {d["_id"] for d in unsent} == {e.state.run_id for e in entries}
    assert all(any(isinstance(item, o.DispatchActivity) for item in store.outbox_of(d)) for d in unsent)

    # Committed: nothing to send, and the journal entry is dropped as stale.
    assert await store.pending_outboxes(0, committed=2) == ([], [])
    assert [d async for d in store.journal.find({})] == []

    # A batch (offsets 2..2) journals run "a" but dies before writing it: "a"'s document still holds
    # the outbox of the committed batch, which was sent, so it is not sent again.
    a = entries[0]
    a.reset_changes()
    writes.absorb(a, machine.handle(a.state, writes.completed(a, 2)))
    journal_only = store._journal_entries([a], {0: (2, 2)})
    await store.journal.insert_many(journal_only)
    journal, unsent = await store.pending_outboxes(0, committed=2)
    assert journal == [journal_only[0]["_id"]] and unsent == []

    # Once written, the same batch's outbox is the one to send again.
    await store.write([a], {0: epoch}, {0: (2, 2)})
    _, unsent = await store.pending_outboxes(0, committed=2)
    assert [d["_id"] for d in unsent] == [a.state.run_id]
    assert unsent[0]["next_event_id"] == a.state.next_event_id


async def test_a_fenced_writers_landed_start_is_sent_by_the_owner_whatever_was_committed(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    # A writer fenced off (epoch 1) whose start's insert landed after the partition was taken (epoch
    # 2): the owner read the same record, found the run made, and committed past it, sending nothing.
    store = RunStore(mongo_db)
    await store.ensure_indexes()
    machine = writes.machine()
    zombie = await store.take_partition(0)
    owner = await store.take_partition(0)
    started = writes.start(machine, _start("z"))
    entry = writes.absorb(RunEntry(state=started.state, partition=0, persisted_next_event_id=1), started)
    [journalled] = await store.write([entry], {0: zombie}, {0: (5, 5)})

    # The owner looks for fenced writers' entries: the run's outbox is its to send.
    journal, unsent = await store.fenced_outboxes({0: owner})
    assert journal == [journalled] and [d["_id"] for d in unsent] == [entry.state.run_id]
    assert await store.fenced_outboxes({0: zombie}) == ([], [])  # a writer's own entries are not
    # Whoever takes the partition next sends it too, though the offsets were committed past.
    _, unsent = await store.pending_outboxes(0, committed=9, epoch=owner + 1)
    assert [d["_id"] for d in unsent] == [entry.state.run_id]
    # An entry of the previous owner's committed batch is not sent again.
    assert await store.pending_outboxes(0, committed=9, epoch=zombie + 1) == ([], [])
