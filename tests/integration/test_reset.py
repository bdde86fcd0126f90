"""Reset on the real stack (issue 15, docs/reset.md): through the tenant client, admission, the cell's
topic and the partition's owner, the new run replayed by the namespace's platform-hosted worker."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from perdure.platform.core import history as h
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.stores.run_bodies import state_of
from perdure.platform.tenancy.model import Quota
from perdure.tenants import WorkflowNotFoundError, WorkflowResetError
from perdure.tenants.client import Client

from .cell_app import Gated
from .cell_harness import count_lines, eventually, run_perdure
from .conftest import TenantCellFactory


def _before_the_signal(events: list[h.HistoryEvent]) -> int:
    """The point right before Gated's signal: the second step's result."""
    signalled = next(e.event_id for e in events if isinstance(e, h.WorkflowExecutionSignaled))
    return max(
        e.event_id for e in events if isinstance(e, h.ActivityTaskCompleted) and e.event_id < signalled
    )


async def test_a_reset_reapplies_a_signal_and_points_the_old_run_at_the_new(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    namespace = tenants.namespaces["a"].record.name
    ledger = tmp_path / "ledger"
    async with (
        await Client.connect(tenants.connection_string("a")) as client,
        await OpsClient.connect(tenants.cell.settings, namespace) as ops,
    ):
        handle = await client.start_workflow(Gated.run, str(ledger), "g", id="gated")
        old_run = handle.run_id
        assert old_run is not None

        async def waiting() -> None:
            assert count_lines(ledger) == {"g-1": 1, "g-2": 1}

        await eventually(waiting, timeout=60)
        await handle.signal(Gated.proceed)
        assert await handle.result(timeout=60) == ["g-1-done", "g-2-done", "g-3-done"]
        point = _before_the_signal(await ops.history("gated"))

        # A point that is none is refused, naming the valid ones; nothing changes.
        scheduled = next(
            e.event_id for e in await ops.history("gated") if isinstance(e, h.ActivityTaskScheduled)
        )
        with pytest.raises(
            WorkflowResetError, match=rf"cannot reset to event {scheduled}: .* points are 1, "
        ):
            await handle.reset(scheduled)
        with pytest.raises(WorkflowResetError, match="history has events 1 to"):
            await handle.reset(10_000)
        with pytest.raises(WorkflowNotFoundError):
            await client.get_workflow_handle("nobody").reset(1)
        assert (await handle.describe()).run_id == old_run

        # Reset to before the signal: the new run replays the steps' results and takes the signal again.
        request_id = str(uuid.uuid4())
        new_run = await handle.reset(point, reason="bad deploy", request_id=request_id)
        assert new_run != old_run and handle.run_id == new_run
        assert await handle.result(timeout=60) == ["g-1-done", "g-2-done", "g-3-done"]
        # Steps 1 and 2 came from the copied history; only step 3 ran again (the code took the signal).
        assert count_lines(ledger) == {"g-1": 1, "g-2": 1, "g-3": 2}

        # Sent again with its request id: the same run, no other.
        again = await client.get_workflow_handle("gated").reset(point, request_id=request_id)
        assert again == new_run
        assert len(await ops.list(workflow_type="Gated")) == 2

        # The chain: the old run closed as it did, with the pointer; the new one knows where it came from.
        old = await handle.describe(run_id=old_run)
        assert (old.status, old.reset_run_id, old.reset_point) == ("completed", new_run, point)
        latest = await handle.describe()
        assert (latest.run_id, latest.status) == (new_run, "completed")
        assert (latest.reset_from_run_id, latest.reset_point) == (old_run, point)

        events = await ops.history("gated")
        marker = events[point]
        assert isinstance(marker, h.WorkflowExecutionReset)
        assert (marker.reset_from_run_id, marker.reason, marker.reapplied_signals) == (
            old_run,
            "bad deploy",
            1,
        )
        signals = [e for e in events if isinstance(e, h.WorkflowExecutionSignaled)]
        assert [(s.signal_name, s.reapplied_from_run_id) for s in signals] == [("proceed", old_run)]


async def test_a_reset_of_an_open_run_terminates_it_and_the_cli_shows_the_chain(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    namespace = tenants.namespaces["a"].record.name
    ledger = tmp_path / "ledger"
    async with await Client.connect(tenants.connection_string("a")) as client:
        handle = await client.start_workflow(Gated.run, str(ledger), "o", id="open")
        old_run = handle.run_id

        async def waiting() -> None:
            assert count_lines(ledger) == {"o-1": 1, "o-2": 1}

        await eventually(waiting, timeout=60)
        # Through the CLI, as ops would after a bad deploy: the run's last workflow task decides again.
        code, out, err = await run_perdure(
            tenants, "workflow", "reset", namespace, "open", "--to", "last-workflow-task", "--reason", "redo"
        )
        assert code == 0, err
        new_run = out.strip()
        assert new_run and new_run != old_run

        code, out, err = await run_perdure(tenants, "workflow", "describe", namespace, "open", "--json")
        assert code == 0, err
        assert f'"reset_from_run_id": "{new_run}"' not in out and f'"run_id": "{new_run}"' in out
        assert f'"reset_from_run_id": "{old_run}"' in out
        code, out, err = await run_perdure(
            tenants, "workflow", "describe", namespace, "open", "--run-id", str(old_run), "--json"
        )
        assert code == 0, err
        assert '"status": "terminated"' in out and f'"new_run_id": "{new_run}"' in out
        code, out, err = await run_perdure(tenants, "workflow", "history", namespace, "open")
        assert code == 0, err
        assert f"workflow_execution_reset  from run {old_run}" in out and ": redo" in out
        code, out, err = await run_perdure(
            tenants, "workflow", "history", namespace, "open", "--run-id", str(old_run)
        )
        assert code == 0, err
        assert f"workflow_execution_terminated  reset into run {new_run}" in out

        # A bad point through the CLI: one clear line, exit code 1.
        code, _, err = await run_perdure(tenants, "workflow", "reset", namespace, "open", "--to", "2")
        assert code == 1 and "points are 1, " in err
        code, _, err = await run_perdure(tenants, "workflow", "reset", namespace, "open", "--to", "soon")
        assert code == 1 and "give an event id" in err
        # The old run may not be reset while the new one is open.
        with pytest.raises(WorkflowResetError, match="not the current run"):
            await handle.reset(1, run_id=old_run)

        # The new run waits for the signal as the old one did; a handle that waited on the old run
        # follows the reset to the new one's result.
        old_handle = client.get_workflow_handle("open", run_id=old_run)
        await client.get_workflow_handle("open").signal(Gated.proceed)
        assert await old_handle.result(timeout=60) == ["o-1-done", "o-2-done", "o-3-done"]
    assert count_lines(ledger) == {"o-1": 1, "o-2": 1, "o-3": 1}


async def test_a_reset_cut_short_between_its_writes_is_finished_when_read_again(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    """The new run is written before the old run is terminated: a SIGKILL between the two leaves two open
    runs until the reset, not committed, is read again. Made here exactly: the cell is killed after the
    reset and the old run's document put back as it was before it."""
    tenants = await make_tenant_cell({"a": Quota()})
    namespace = tenants.namespaces["a"].record.name
    ledger = tmp_path / "ledger"
    first = tenants.cell.processes[0]
    async with (
        await Client.connect(tenants.connection_string("a")) as client,
        await OpsClient.connect(tenants.cell.settings, namespace) as ops,
    ):
        handle = await client.start_workflow(Gated.run, str(ledger), "k", id="killed")
        old_run = handle.run_id

        async def waiting() -> None:
            assert count_lines(ledger) == {"k-1": 1, "k-2": 1}
            document = await ops.store.run(str(old_run))
            # Its code took the second result and waits (no task in flight, nothing pending).
            assert document is not None and state_of(document)["workflow_task"] is None
            assert not state_of(document)["pending_activities"]

        await eventually(waiting, timeout=60)
        before = await ops.store.run(str(old_run))
        assert before is not None
        request_id = str(uuid.uuid4())
        new_run = await handle.reset("last-workflow-task", request_id=request_id)
        first.kill()  # SIGKILL
        await first.wait()
        await ops.store.runs.replace_one({"_id": old_run}, before)
        open_runs = {r["_id"] for r in await ops.list(status="running")}
        assert open_runs == {old_run, new_run}  # the state a crash between the writes leaves

        await tenants.cell.start_process().start()
        # The client sends its reset again (its answer was lost with the cell): the same run answers,
        # and the old run is terminated now, pointing at it.
        assert await client.get_workflow_handle("killed").reset(1, request_id=request_id) == new_run

        async def one_open_run() -> None:
            runs = {r["_id"]: r["status"] for r in await ops.list(workflow_type="Gated")}
            assert runs == {old_run: "terminated", new_run: "running"}
            assert (await ops.describe("killed", old_run))["new_run_id"] == new_run

        await eventually(one_open_run, timeout=60)
        await client.get_workflow_handle("killed").signal(Gated.proceed)
        assert await handle.result(timeout=90) == ["k-1-done", "k-2-done", "k-3-done"]
    assert count_lines(ledger) == {"k-1": 1, "k-2": 1, "k-3": 1}


async def test_a_tenant_cannot_reset_or_describe_another_namespaces_run(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota(), "b": Quota()})
    ledger = tmp_path / "ledger"
    async with (
        await Client.connect(tenants.connection_string("a")) as a,
        await Client.connect(tenants.connection_string("b")) as b,
    ):
        theirs = await b.start_workflow(Gated.run, str(ledger), "b", id="shared-id")
        mine = await a.start_workflow(Gated.run, str(ledger), "a", id="shared-id")

        async def both_waiting() -> None:
            assert count_lines(ledger) == {"a-1": 1, "a-2": 1, "b-1": 1, "b-2": 1}

        await eventually(both_waiting, timeout=60)
        # Namespace a names b's run (same workflow id): no such run of a's workflow.
        with pytest.raises(WorkflowNotFoundError):
            await a.get_workflow_handle("shared-id").reset(1, run_id=theirs.run_id)
        with pytest.raises(WorkflowNotFoundError):
            await mine.describe(run_id=theirs.run_id)
        described = await theirs.describe()
        assert (described.run_id, described.status) == (theirs.run_id, "running")
        # Its own reset touches its own run only.
        await mine.reset("last-workflow-task")
        assert (await theirs.describe()).run_id == theirs.run_id
        await theirs.signal(Gated.proceed)
        assert await theirs.result(timeout=60) == ["b-1-done", "b-2-done", "b-3-done"]
