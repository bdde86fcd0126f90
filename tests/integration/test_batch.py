"""Batch operations on the real services, steered by ``perdure workflow batch``: a terminate of 500 runs
through a SIGKILL of the cell that runs the batch (each run terminated exactly once, the counts exact,
the rate held, the runs outside the query untouched), a signal to a handful of runs (once each), and bad
input refused before anything starts."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import datetime
from typing import Any

import pytest

from perdure.platform.control.batch_requests import describe_batch
from perdure.platform.control.batch_workflow import page_size
from perdure.platform.core import history as h
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.protocol.ingress_wire import BatchCommand
from perdure.platform.tenancy.model import Quota
from perdure.tenants import (
    BatchAlreadyRunningError,
    BatchNotFoundError,
    Client,
    MalformedRequestError,
)

from .cell_harness import TenantCell, eventually, run_perdure
from .conftest import TenantCellFactory

pytestmark = pytest.mark.timeout(240)
DOOMED = 500
KEPT = 20
RATE = 25.0  # runs a second: 500 take over 18 s
REASON = "batch cleanup after the bad deploy"
QUERY = "WorkflowType = 'Account' AND ExecutionStatus = 'Running' AND WorkflowId STARTS_WITH 'doomed-'"


@pytest.fixture
async def batch_cell(make_tenant_cell: TenantCellFactory) -> TenantCell:
    """A running cell with the control plane bootstrapped on it (so batches run on it too) and two
    tenants' namespaces (``u``'s runs share ids with ``t``'s, and no batch of ``t`` may reach them)."""
    tenants = await make_tenant_cell(
        {"t": Quota(actions_per_second=1000, burst=1000, max_payload_bytes=64 * 1024), "u": Quota()}
    )
    code, _, err = await run_perdure(tenants, "controlplane", "bootstrap", "--cell", tenants.cell.cell)
    assert code == 0, err
    return tenants


async def batch(tenants: TenantCell, *args: str) -> str:
    """``perdure workflow batch ARGS``, which must succeed; its output."""
    code, out, err = await run_perdure(tenants, "workflow", "batch", *args)
    assert code == 0, f"perdure workflow batch {' '.join(args)}: {err}"
    return out


async def start_waiting_runs(ops: OpsClient, ids: list[str]) -> None:
    """Runs of ``Account``, each waiting for an update that never comes; returns once all are running."""
    await ops.start_workflows("Account", [(workflow_id, ["unused-ledger"]) for workflow_id in ids])

    async def all_running() -> None:
        running = await ops.store.runs.count_documents(
            {"namespace": ops.namespace.name, "workflow_id": {"$in": ids}, "status": "running"}
        )
        assert running == len(ids), running

    await eventually(all_running, timeout=60)


async def events_of(ops: OpsClient, workflow_id: str) -> list[h.HistoryEvent]:
    return await ops.history(workflow_id)


async def histories_of(ops: OpsClient, workflow_ids: list[str]) -> dict[str, list[h.HistoryEvent]]:
    """The histories of many runs, read a few dozen at a time."""
    gate = asyncio.Semaphore(32)

    async def read(workflow_id: str) -> tuple[str, list[h.HistoryEvent]]:
        async with gate:
            return workflow_id, await events_of(ops, workflow_id)

    return dict(await asyncio.gather(*(read(w) for w in workflow_ids)))


async def test_a_batch_terminate_of_500_runs_goes_through_a_sigkill_of_its_cell(
    batch_cell: TenantCell,
) -> None:
    tenants = batch_cell
    namespace = tenants.t.record.name
    settings = tenants.cell.settings
    doomed = [f"doomed-{n:04d}" for n in range(DOOMED)]
    kept = [f"kept-{n:02d}" for n in range(KEPT)]
    async with await OpsClient.connect(settings, namespace) as ops:
        began = time.monotonic()
        await start_waiting_runs(ops, doomed + kept)
        print(f"{DOOMED + KEPT} runs started and running in {time.monotonic() - began:.1f} s")
        run_ids = {w: (await ops.describe(w))["run_id"] for w in doomed}

        out = await batch(
            tenants,
            "terminate",
            namespace,
            "--query",
            QUERY,
            "--reason",
            REASON,
            "--rate",
            f"{RATE:g}/s",
            "--id",
            "cleanup",
        )
        assert out.startswith(
            f"batch cleanup started in namespace {namespace}: terminate of the {DOOMED} runs matching"
        ), out

        async def partly_done() -> dict[str, Any]:
            described = await describe_batch(settings, namespace, "cleanup")
            done = described["counts"]["succeeded"]
            assert page_size(RATE) <= done <= DOOMED - 2 * page_size(RATE), described["counts"]
            return described

        before = await eventually(partly_done, timeout=60, every=0.1)
        process = tenants.cell.processes[0]
        process.kill(signal.SIGKILL)
        await process.wait()
        print(f"killed the cell with {before['counts']['succeeded']} of {DOOMED} done")
        # While its cell is down, the batch is described from what its workflow recorded.
        recorded = await describe_batch(settings, namespace, "cleanup")
        assert recorded["note"].startswith("as last recorded (not answering"), recorded
        assert recorded["state"] == "running" and recorded["query"] == QUERY
        assert before["counts"]["succeeded"] <= recorded["counts"]["succeeded"] < DOOMED
        await tenants.cell.start_process().start()

        async def finished() -> dict[str, Any]:
            described = json.loads(await batch(tenants, "status", namespace, "cleanup", "--json"))
            assert described["state"] == "completed", described
            return described

        described = await eventually(finished, timeout=120, every=1.0)
        assert described["counts"] == {
            "total_estimate": DOOMED,
            "succeeded": DOOMED,
            "failed": 0,
            "skipped": 0,
        }
        assert described["operation"] == "terminate" and described["reason"] == REASON
        assert described["last_error"] == ""
        # The rate held through the crash: durable timers fire late, never early (the first page is free).
        elapsed = datetime.fromisoformat(described["finished_at"]) - datetime.fromisoformat(
            described["started_at"]
        )
        assert elapsed.total_seconds() >= (DOOMED - page_size(RATE)) / RATE, elapsed
        print(f"batch of {DOOMED} at {RATE:g}/s took {elapsed.total_seconds():.1f} s with the crash")
        # Every run terminated exactly once, with the batch's reason; nothing else touched.
        histories = await histories_of(ops, doomed)
        for workflow_id, events in histories.items():
            assert events[0].run_id == run_ids[workflow_id]  # type: ignore[attr-defined]
            terminated = [e for e in events if isinstance(e, h.WorkflowExecutionTerminated)]
            assert [e.reason for e in terminated] == [REASON], (workflow_id, terminated)
            assert sum(h.is_close_event(e) for e in events) == 1
        for workflow_id in kept:
            assert (await ops.describe(workflow_id))["status"] == "running"
            assert not [e for e in await events_of(ops, workflow_id) if h.is_close_event(e)]

    listed = await batch(tenants, "list", namespace)
    assert listed.splitlines() == [
        f"cleanup\tterminate\tcompleted\t{DOOMED}/{DOOMED} done: {DOOMED} succeeded, 0 failed, 0 skipped"
    ]
    shown = await batch(tenants, "status", namespace, "cleanup")
    assert "state: completed" in shown and f"progress: {DOOMED}/{DOOMED} done" in shown


async def test_a_batch_signal_reaches_each_run_once_and_skips_closed_ones(batch_cell: TenantCell) -> None:
    tenants = batch_cell
    namespace = tenants.t.record.name
    async with await OpsClient.connect(tenants.cell.settings, namespace) as ops:
        targets = [f"sig-{n}" for n in range(6)]
        await start_waiting_runs(ops, [*targets, "other-0"])
        neighbour = await OpsClient.connect(tenants.cell.settings, tenants.u.record.name)
        await start_waiting_runs(neighbour, targets[:3])
        await ops.terminate("sig-5", "closed before the batch")
        await eventually(lambda: _closed(ops, "sig-5"))
        await batch(
            tenants,
            "signal",
            namespace,
            "--query",
            "WorkflowId STARTS_WITH 'sig-'",
            "--name",
            "release",
            "--input",
            "[]",
            "--id",
            "wake",
        )

        async def finished() -> dict[str, Any]:
            described = await describe_batch(tenants.cell.settings, namespace, "wake")
            assert described["state"] == "completed", described
            return described

        described = await eventually(finished, timeout=60)
        assert described["counts"] == {"total_estimate": 6, "succeeded": 5, "failed": 0, "skipped": 1}
        for workflow_id in [*targets[:5], "other-0", "sig-5"]:
            signals = [
                e
                for e in await events_of(ops, workflow_id)
                if isinstance(e, h.WorkflowExecutionSignaled) and e.signal_name == "release"
            ]
            assert len(signals) == (1 if workflow_id in targets[:5] else 0), workflow_id
        # Runs of the same ids in another tenant's namespace are not reached.
        async with neighbour:
            for workflow_id in targets[:3]:
                assert not [
                    e
                    for e in await events_of(neighbour, workflow_id)
                    if isinstance(e, h.WorkflowExecutionSignaled)
                ]


async def test_bad_input_is_refused_before_anything_starts(batch_cell: TenantCell) -> None:
    tenants = batch_cell
    namespace = tenants.t.record.name
    big = json.dumps("x" * (70 * 1024))  # over the namespace's 64 KiB
    for args, message in [
        (
            ("terminate", namespace, "--query", "WorkflowType = 'Account' AND Nope = 1"),
            "bad query at column 30: unknown field 'Nope'",
        ),
        (
            ("terminate", namespace, "--query", "WorkflowType = = 'Account'"),
            "bad query at column 16: unexpected '='",
        ),
        (("terminate", f"{namespace}-nope", "--query", QUERY), f"no namespace '{namespace}-nope'"),
        (("cancel", namespace, "--query", QUERY, "--rate", "0"), "rate 0/s: between 0.01/s and 1000/s"),
        (("cancel", namespace, "--query", QUERY, "--rate", "1e9"), "--rate '1e9': a number of runs"),
        (("cancel", namespace, "--query", QUERY, "--rate", "5000/s"), "rate 5000/s: between"),
        (
            ("signal", namespace, "--query", QUERY, "--name", "release", "--input", big),
            "signal input is 71700 bytes, over the limit of 65536 bytes",
        ),
        (("signal", namespace, "--query", QUERY, "--name", "go", "--input", "{oops"), "--input is not JSON"),
        (("terminate", namespace, "--query", QUERY, "--id", "has space"), "batch id 'has space'"),
    ]:
        code, out, err = await run_perdure(tenants, "workflow", "batch", *args)
        assert code == 1, (args, out, err)
        command = args[0]
        assert err.startswith(f"perdure workflow batch {command}: {message}"), err
        if "column 30" in message:  # the query shown, a caret under the offending token
            query_line, caret_line = err.splitlines()[1:3]
            assert query_line[caret_line.index("^") :].startswith("Nope = 1"), err
    code, _, err = await run_perdure(tenants, "workflow", "batch", "status", namespace, "nothing")
    assert code == 1 and f"no batch 'nothing' in namespace '{namespace}'" in err
    assert (await batch(tenants, "list", namespace)).strip() == f"no batches in namespace {namespace}"


async def test_a_tenant_client_starts_follows_and_stops_its_own_batches_only(batch_cell: TenantCell) -> None:
    tenants = batch_cell
    namespace, neighbour_namespace = tenants.t.record.name, tenants.u.record.name
    async with (
        await OpsClient.connect(tenants.cell.settings, namespace) as ops,
        await OpsClient.connect(tenants.cell.settings, neighbour_namespace) as neighbour_ops,
        await Client.connect(tenants.connection_string("t")) as client,
        await Client.connect(tenants.connection_string("u")) as neighbour,
    ):
        await start_waiting_runs(ops, [f"cli-{n}" for n in range(3)] + [f"slow-{n}" for n in range(4)])
        await start_waiting_runs(neighbour_ops, [f"cli-{n}" for n in range(3)])
        done = await client.start_batch(
            "cancel", "WorkflowId STARTS_WITH 'cli-'", batch_id="tidy", reason="from the client"
        )
        assert done.matching == 3

        described = await done.wait(timeout=60, poll_seconds=0.2)
        assert described["state"] == "completed", described
        assert described["counts"] == {"total_estimate": 3, "succeeded": 3, "failed": 0, "skipped": 0}
        assert "workflow" not in described  # where it runs on the control plane is not the tenant's
        for n in range(3):
            cancels = [
                e
                for e in await events_of(ops, f"cli-{n}")
                if isinstance(e, h.WorkflowExecutionCancelRequested)
            ]
            assert len(cancels) == 1
            # The other tenant's runs of the same ids are not reached.
            assert not [
                e
                for e in await events_of(neighbour_ops, f"cli-{n}")
                if isinstance(e, h.WorkflowExecutionCancelRequested)
            ]

        # A slow batch can be seen running, refuses a second start of its id, and stops.
        slow = await client.start_batch(
            "terminate", "WorkflowId STARTS_WITH 'slow-'", batch_id="slow", reason="slowly", rate=0.2
        )
        with pytest.raises(BatchAlreadyRunningError):
            await client.start_batch("terminate", "WorkflowId STARTS_WITH 'slow-'", batch_id="slow")
        assert {b["batch"] for b in await client.list_batches()} == {"tidy", "slow"}
        # The neighbour neither sees nor reaches them, and a namespace in a body is ignored.
        assert await neighbour.list_batches() == []
        for batch_id in ("slow", f"../{namespace}/slow"):
            with pytest.raises((BatchNotFoundError, MalformedRequestError)):
                await neighbour.get_batch_handle(batch_id).describe()
            with pytest.raises((BatchNotFoundError, MalformedRequestError)):
                await neighbour.get_batch_handle(batch_id).stop()
        forged = {
            "batch_id": "forged",
            "operation": "terminate",
            "query": "WorkflowId STARTS_WITH 'slow-'",
            "namespace": namespace,
        }
        reply = await neighbour._call(BatchCommand(request_id="forged", action="start", definition=forged))
        assert reply.batch == {"batch": "forged", "matching": 0}  # the neighbour's own runs: none match
        stopped = await slow.stop("enough")
        assert stopped["state"] == "stopped" and stopped["counts"]["succeeded"] < 4, stopped
        statuses = [(await ops.describe(f"slow-{n}"))["status"] for n in range(4)]
        assert statuses.count("running") >= 1

        # A bad query is refused, pointing at the token; nothing starts.
        with pytest.raises(MalformedRequestError, match="column 24") as refused:
            await client.start_batch("terminate", "WorkflowId STARTS_WITH = 'x'")
        assert "^" in str(refused.value)
        with pytest.raises(MalformedRequestError, match="a batch signal needs the signal's name"):
            await client.start_batch("signal", "WorkflowId = 'x'", signal="")
        assert {b["batch"] for b in await client.list_batches()} == {"tidy", "slow"}


async def _closed(ops: OpsClient, workflow_id: str) -> None:
    assert (await ops.describe(workflow_id))["status"] == "terminated"
