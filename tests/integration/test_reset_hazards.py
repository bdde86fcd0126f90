"""Review of workflow reset on the real stack (issue 15 part 3): each test states a property reset must
have and fails while it does not."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.stores.run_bodies import state_of
from perdure.platform.tenancy.model import Quota
from perdure.tenants.client import Client

from .cell_app import Gated, Noop
from .cell_harness import count_lines, eventually
from .conftest import TenantCellFactory


async def test_a_reset_cut_short_between_its_pointer_and_its_new_run_is_finished_when_read_again(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    """``RunStore.write`` moves the workflow's latest-run pointer to the new run, then inserts the new
    run, then updates the old one. A SIGKILL after the pointer's replace and before the insert leaves
    the pointer naming a run that does not exist, the old run open, and the reset not committed. Made
    here exactly (as test_reset.py makes the later window): the reset, read again (here: sent again with
    its request id, which is the same record), must make its run and terminate the old one."""
    tenants = await make_tenant_cell({"a": Quota()})
    ledger = tmp_path / "ledger"
    first = tenants.cell.processes[0]
    async with (
        await Client.connect(tenants.connection_string("a")) as client,
        await OpsClient.connect(tenants.cell.settings, tenants.namespaces["a"].record.name) as ops,
    ):
        handle = await client.start_workflow(Gated.run, str(ledger), "p", id="pointer")
        old_run = handle.run_id

        async def waiting() -> None:
            assert count_lines(ledger) == {"p-1": 1, "p-2": 1}
            document = await ops.store.run(str(old_run))
            assert document is not None and state_of(document)["workflow_task"] is None

        await eventually(waiting, timeout=60)
        before = await ops.store.run(str(old_run))
        assert before is not None
        request_id = str(uuid.uuid4())
        new_run = await handle.reset("last-workflow-task", request_id=request_id)
        first.kill()  # SIGKILL
        await first.wait()
        # The state the window leaves: pointer moved, new run not inserted, old run as it was.
        await ops.store.runs.replace_one({"_id": old_run}, before)
        await ops.store.runs.delete_one({"_id": new_run})
        await ops.store.history.delete_many({"run_id": new_run})
        assert (await ops.store.runs.find_one({"_id": f"latest:{ops.namespace.name}/pointer"}) or {}).get(
            "run_id"
        ) == new_run

        await tenants.cell.start_process().start()
        outcome: str
        try:
            outcome = await client.get_workflow_handle("pointer").reset(1, request_id=request_id)
        except Exception as exc:  # what the reset read again answers
            outcome = f"{type(exc).__name__}: {exc}"
        runs = {r["_id"]: r["status"] for r in await ops.list(workflow_type="Gated")}
        assert (outcome, runs) == (new_run, {old_run: "terminated", new_run: "running"})


async def test_a_reset_of_a_large_run_inside_its_limits_leaves_the_cell_serving(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    """A run of ~49.7 MB of history (196 signals of 190 kB, under the namespace's default 256 kB payload
    limit; inside the 50 MiB history limit) is reset to its last workflow task. The engine writes the new
    run as ONE run document holding the whole copied prefix as its tail: pymongo refuses it
    (DocumentTooLarge: past the 48 MB message size; real MongoDB refuses any document past 16 MB) AFTER
    the write moved the workflow's pointer to the new run. The batch is rewound and read again; the
    pointer now names no run, so the reset answers "not found" and the workflow id is left orphaned (its
    open run unreachable by id). The reset must be refused (or written in pieces) and leave the workflow
    as it was."""
    tenants = await make_tenant_cell({"a": Quota()})
    ledger = tmp_path / "ledger"
    async with (
        await Client.connect(tenants.connection_string("a")) as client,
        await OpsClient.connect(tenants.cell.settings, tenants.namespaces["a"].record.name) as ops,
    ):
        handle = await client.start_workflow(Gated.run, str(ledger), "l", id="large")

        async def waiting() -> None:
            assert count_lines(ledger) == {"l-1": 1, "l-2": 1}

        await eventually(waiting, timeout=60)
        filler = "x" * 190_000
        for _ in range(196):
            await handle.signal("filler", filler)  # no handler: dropped by the code, kept in history

        async def recorded() -> None:
            document = await ops.store.run(str(handle.run_id))
            assert document is not None and document["status"] == "running"
            assert state_of(document)["next_event_id"] >= 196 + 7
            assert state_of(document)["workflow_task"] is None

        await eventually(recorded, timeout=240)

        old_run = handle.run_id
        try:
            outcome = await asyncio.wait_for(handle.reset("last-workflow-task"), timeout=90)
        except Exception as exc:  # a refusal would be fine; what matters is what is left
            outcome = f"{type(exc).__name__}: {exc}"
        pointer = await ops.store.runs.find_one({"_id": f"latest:{ops.namespace.name}/large"})
        named = pointer["run_id"] if pointer else None
        failures = tenants.cell.processes[0].lines("an engine batch")
        left = {
            "reset": outcome,
            "pointer names a stored run": await ops.store.run(str(named)) is not None,
            "old run": (await ops.store.run(str(old_run)) or {}).get("status"),
            "engine batch failure": failures[0][:400] if failures else None,
        }
        # One open run, reachable by the workflow id.
        assert left["pointer names a stored run"], left
        described = await client.get_workflow_handle("large").describe()
        assert described.status == "running"

        async def bystander() -> str:
            other = await client.start_workflow(Noop.run, "still-served", id="bystander")
            return str(await other.result())

        assert await asyncio.wait_for(bystander(), timeout=60) == "still-served"
