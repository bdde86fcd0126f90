"""A reset's writes on the real stack (docs/reset.md, "Idempotence and crashes"): the new run exists
before the workflow's pointer names it, a crash between them is finished by the reset read again, a
large run's history is written in bounded batches, and a write's pointers end on its last run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import bson

from perdure.platform.core import history as h
from perdure.platform.core.run_state import rebuild_state
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.stores.run_bodies import state_of
from perdure.platform.stores.run_store import HISTORY_BATCH_BYTES, RunEntry
from perdure.platform.tenancy.model import Quota
from perdure.tenants.client import Client

from .cell_app import Gated
from .cell_harness import count_lines, eventually
from .conftest import TenantCellFactory


async def test_a_reset_cut_short_after_its_new_run_and_before_its_pointer_is_finished_when_read_again(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    """The window the write order leaves: the new run written, the pointer still on the old run, the old
    run open. The reset read again (here: sent again with its request id, the same record) moves the
    pointer and terminates the old run; the workflow id has one open run, the new one."""
    tenants = await make_tenant_cell({"a": Quota()})
    ledger = tmp_path / "ledger"
    first = tenants.cell.processes[0]
    async with (
        await Client.connect(tenants.connection_string("a")) as client,
        await OpsClient.connect(tenants.cell.settings, tenants.namespaces["a"].record.name) as ops,
    ):
        handle = await client.start_workflow(Gated.run, str(ledger), "w", id="window")
        old_run = str(handle.run_id)

        async def waiting() -> None:
            assert count_lines(ledger) == {"w-1": 1, "w-2": 1}
            document = await ops.store.run(old_run)
            assert document is not None and state_of(document)["workflow_task"] is None

        await eventually(waiting, timeout=60)
        before = await ops.store.run(old_run)
        assert before is not None
        pointer_id = f"latest:{ops.namespace.name}/window"
        pointer = await ops.store.runs.find_one({"_id": pointer_id})
        assert pointer is not None and pointer["run_id"] == old_run
        request_id = str(uuid.uuid4())
        new_run = await handle.reset("last-workflow-task", request_id=request_id)
        first.kill()  # SIGKILL
        await first.wait()
        moved = await ops.store.runs.find_one({"_id": pointer_id})
        assert moved is not None and (moved["run_id"], moved["previous_run_id"]) == (new_run, old_run)
        # The window: the new run stays, the pointer and the old run are as they were.
        await ops.store.runs.replace_one({"_id": old_run}, before)
        await ops.store.runs.replace_one({"_id": pointer_id}, pointer)

        await tenants.cell.start_process().start()
        outcome = await client.get_workflow_handle("window").reset(1, request_id=request_id)
        runs = {r["_id"]: r["status"] for r in await ops.list(workflow_type="Gated")}
        assert (outcome, runs) == (new_run, {old_run: "terminated", new_run: "running"})
        finished = await ops.store.runs.find_one({"_id": pointer_id})
        assert finished is not None and finished["run_id"] == new_run
        described = await client.get_workflow_handle("window").describe()
        assert (described.run_id, described.status) == (new_run, "running")


async def test_a_reset_of_a_large_run_writes_the_new_runs_history_in_bounded_batches(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    """~15 MB of history (60 signals of 190 kB) reset to its last workflow task: the new run's history
    is its batches (none past the bound) and a small run document, and reads back as the old run's
    prefix; the old run is terminated and the workflow's pointer names the new run."""
    tenants = await make_tenant_cell({"a": Quota()})
    ledger = tmp_path / "ledger"
    async with (
        await Client.connect(tenants.connection_string("a")) as client,
        await OpsClient.connect(tenants.cell.settings, tenants.namespaces["a"].record.name) as ops,
    ):
        handle = await client.start_workflow(Gated.run, str(ledger), "b", id="big")

        async def waiting() -> None:
            assert count_lines(ledger) == {"b-1": 1, "b-2": 1}

        await eventually(waiting, timeout=60)
        for _ in range(60):
            await handle.signal("filler", "x" * 190_000)  # no handler: dropped by the code, kept in history

        async def recorded() -> None:
            document = await ops.store.run(str(handle.run_id))
            assert document is not None and state_of(document)["next_event_id"] >= 60 + 7
            assert state_of(document)["workflow_task"] is None

        await eventually(recorded, timeout=120)
        old_run = str(handle.run_id)
        new_run = await handle.reset("last-workflow-task")

        async def replaced() -> None:
            assert (await ops.store.run(old_run) or {}).get("status") == "terminated"

        await eventually(replaced, timeout=60)
        old_history = await ops.history("big", old_run)
        document = await ops.store.run(new_run)
        assert document is not None
        assert len(bson.encode(document)) < HISTORY_BATCH_BYTES + 1024 * 1024
        batches = [b async for b in ops.store.history.find({"run_id": new_run})]
        assert len(batches) >= 4
        assert all(len(bson.encode(b)) <= HISTORY_BATCH_BYTES + 256 * 1024 for b in batches)
        new_history = await ops.history("big", new_run)
        point = next(e for e in new_history if isinstance(e, h.WorkflowExecutionReset)).reset_point
        assert [e.model_dump(exclude={"run_id"}) for e in new_history[1:point]] == [
            e.model_dump(exclude={"run_id"}) for e in old_history[1:point]
        ]
        pointer = await ops.store.runs.find_one({"_id": f"latest:{ops.namespace.name}/big"})
        assert pointer is not None and pointer["run_id"] == new_run


def _new_run(namespace: str, workflow_id: str, run_id: str) -> RunEntry:
    started = h.WorkflowExecutionStarted(
        event_id=1,
        timestamp=datetime.now(UTC),
        workflow_type="Flow",
        workflow_id=workflow_id,
        run_id=run_id,
        namespace=namespace,
    )
    entry = RunEntry(
        state=rebuild_state([started]), partition=0, persisted_next_event_id=1, pointer_after=True
    )
    entry.new_events = [started]
    entry.state_changed = True
    return entry


async def test_a_write_leaves_the_pointer_on_its_last_run_and_a_pointer_to_no_run_falls_back(
    make_tenant_cell: TenantCellFactory,
) -> None:
    """Two runs of one workflow in one write (two resets of a batch): the pointer names the second
    whatever order the database applies them in. A pointer naming a run never written (a crash between
    a start's pointer and its run) reads as the run it named before."""
    tenants = await make_tenant_cell({"a": Quota()})
    async with await OpsClient.connect(tenants.cell.settings, tenants.namespaces["a"].record.name) as ops:
        namespace = ops.namespace.name
        for attempt in range(5):
            workflow_id = f"twice-{attempt}"
            runs = [_new_run(namespace, workflow_id, f"{workflow_id}-{i}") for i in range(2)]
            runs[1].replaces = runs[0].state.run_id
            await ops.store.write(runs, {0: 1}, {0: (0, 0)})
            pointer = await ops.store.runs.find_one({"_id": f"latest:{namespace}/{workflow_id}"})
            assert pointer is not None and pointer["run_id"] == f"{workflow_id}-1"
        await ops.store.runs.replace_one(
            {"_id": f"latest:{namespace}/twice-0"},
            {"kind": "pointer", "run_id": "never-written", "previous_run_id": "twice-0-1"},
        )
        latest = await ops.store.latest_run(namespace, "twice-0")
        assert latest is not None and latest["_id"] == "twice-0-1"
