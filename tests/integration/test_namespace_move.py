"""``perdure namespace move NAME --to CELL`` on the real stack: a namespace with runs open in every
state (waiting on a signal, on a timer, on an activity) moves to another cell through the control
plane. The runs finish there with their histories whole, no step runs twice, the clients keep their
connection string (signals sent during the move are applied after it), and the actions billed equal
the actions in the histories."""

from __future__ import annotations

import asyncio
import collections
import re
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from bench.reconcile import counted_from_histories, metered
from perdure.platform.control.provisioning import create_cell
from perdure.platform.core import history as h
from perdure.platform.core.usage import ACTION_METRICS
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.stores.control_store import ControlStore
from perdure.platform.tenancy.model import Quota
from perdure.tenants import Client

from .cell_app import Gated, MixedWork, Sleeper, ThreeSteps
from .cell_harness import CellProcess, TenantCell, count_lines, eventually, run_perdure
from .conftest import TenantCellFactory


async def test_a_namespace_moves_with_its_open_runs_and_its_clients_notice_nothing(
    make_tenant_cell: TenantCellFactory,
    tmp_path: Path,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    kafka_admin: AIOKafkaAdminClient,
) -> None:
    tenants = await make_tenant_cell({"a": Quota.unthrottled()}, PERDURE_STORAGE_SAMPLE_SECONDS="2")
    target = f"{tenants.cell.cell}-b"
    try:
        await _move_with_open_runs(tenants, target, tmp_path, mongo_client)
    finally:
        await kafka_admin.delete_topics([f"perdure.cell.{target}.tasks", f"perdure.cell.{target}.dlq"])
        await mongo_client.drop_database(tenants.cell.settings.cell_database(target))


async def _move_with_open_runs(
    tenants: TenantCell, target: str, tmp_path: Path, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> None:
    cell = tenants.cell
    code, _, err = await run_perdure(tenants, "controlplane", "bootstrap", "--cell", cell.cell)
    assert code == 0, err
    await create_cell(cell.settings, target, 3)
    target_process = CellProcess(cell, "target", ("cell", "run", target))
    cell.processes.append(target_process)
    await target_process.start()
    await cell.metering_process().start()
    namespace = tenants.a.record.name
    ledger = str(tmp_path / "ledger")

    async with await Client.connect(tenants.connection_string("a"), request_timeout=180) as client:
        gated = [await client.start_workflow(Gated.run, ledger, f"g{i}", id=f"gated-{i}") for i in range(3)]
        mixed = await client.start_workflow(MixedWork.run, ledger, "m", id="mixed")
        done_before = await client.execute_workflow(ThreeSteps.run, ledger, "before", id="closed-before")

        async def all_waiting() -> None:
            for i in range(3):
                assert await gated[i].query(Gated.released, "q") == "q:no"
            assert await mixed.query(MixedWork.waiting) is True

        await eventually(all_waiting, timeout=60)
        # Started just before the move: their steps are under way while it holds and hands over.
        busy = [
            await client.start_workflow(ThreeSteps.run, ledger, f"b{i}", id=f"busy-{i}") for i in range(5)
        ]
        # Their timers fire about when the namespace is held, or after it is switched.
        sleeping = [await client.start_workflow(Sleeper.run, 1.0 + i, id=f"sleeper-{i}") for i in range(3)]
        moving = asyncio.create_task(run_perdure(tenants, "namespace", "move", namespace, "--to", target))

        async def held() -> None:
            record = await ControlStore(mongo_client[cell.settings.control_database]).get_namespace(namespace)
            assert record.status == "moving" or record.cell == target

        await eventually(held, timeout=30, every=0.05)
        # Sent while the namespace moves, through the same connection string: taken after it.
        signalled = [asyncio.create_task(g.signal(Gated.proceed)) for g in gated]
        # Sent by ops straight to the cell's topic while it moves: held by the source's engine, then
        # handed over to the target in their order.
        ops = await OpsClient.connect(cell.settings, namespace)
        sent_by_ops = 0
        try:
            while not moving.done():
                await ops.signal("gated-0", "proceed")
                sent_by_ops += 1
                await asyncio.sleep(0.1)
        finally:
            await ops.close()
        code, out, err = await moving
        assert code == 0, err
        assert f"moved from cell {cell.cell} to {target}" in out and "moving " in err, out + err
        print(f"\n{err.strip()}\n{out.strip()}\n{sent_by_ops} signals sent by ops during the move")
        assert re.search(r", [1-9]\d* held records sent on", out), out
        await asyncio.gather(*signalled)
        await mixed.signal(MixedWork.proceed)
        started_after = await client.execute_workflow(ThreeSteps.run, ledger, "after", id="started-after")

        assert [await g.result(timeout=90) for g in gated] == [
            [f"g{i}-1-done", f"g{i}-2-done", f"g{i}-3-done"] for i in range(3)
        ]
        assert [await s.result(timeout=90) for s in sleeping] == ["woke"] * 3
        assert [await b.result(timeout=90) for b in busy] == [
            [f"b{i}-1-done", f"b{i}-2-done", f"b{i}-3-done"] for i in range(5)
        ]
        assert await mixed.result(timeout=90) == "m:7:woke"
        assert done_before == ["before-1-done", "before-2-done", "before-3-done"]
        assert started_after == ["after-1-done", "after-2-done", "after-3-done"]
        # A run closed before the move is described from its new cell.
        assert (await client.get_workflow_handle("closed-before").describe()).status == "completed"

    record = await ControlStore(mongo_client[cell.settings.control_database]).get_namespace(namespace)
    assert (record.cell, record.status, record.moving_to) == (target, "active", None)
    counts = count_lines(Path(ledger))
    tags = [f"g{i}" for i in range(3)] + [f"b{i}" for i in range(5)] + ["before", "after"]
    assert {f"{t}-{n}": counts.get(f"{t}-{n}") for t in tags for n in (1, 2, 3)} == {
        f"{t}-{n}": 1 for t in tags for n in (1, 2, 3)
    }  # every step ran once, none twice
    source_db, target_db = (mongo_client[cell.settings.cell_database(c)] for c in (cell.cell, target))
    assert await source_db["runs"].count_documents({"namespace": namespace}) == 0
    assert await source_db["held_records"].count_documents({"namespace": namespace}) == 0
    assert await target_db["runs"].count_documents({"namespace": namespace}) >= 13
    ops = await OpsClient.connect(cell.settings, namespace)
    try:
        for workflow_id in ("gated-0", "sleeper-0", "mixed", "busy-0", "closed-before"):
            events = await ops.history(workflow_id)
            assert [e.event_id for e in events] == list(range(1, len(events) + 1)), workflow_id
            assert isinstance(events[-1], h.WorkflowExecutionCompleted), workflow_id
    finally:
        await ops.close()

    # Billing unbroken: every action in the histories (now all on the target) is billed once.
    expected = await counted_from_histories(cell.settings, target, namespace)

    async def billed_equals_counted() -> None:
        billed = await metered(cell.settings, namespace)
        # Queries are left out: the test's polling asked a number of them it does not count.
        actions = collections.Counter({m: billed[m] for m in ACTION_METRICS if billed[m] and m != "query"})
        assert actions == expected

    await eventually(billed_equals_counted, timeout=60)

    # And back again, a run open across the return: the source's engine kept nothing stale of it.
    async with await Client.connect(tenants.connection_string("a"), request_timeout=180) as client:
        returning = await client.start_workflow(Gated.run, ledger, "r", id="gated-0")  # the id again
        assert await returning.query(Gated.released, "q") == "q:no"
        code, out, err = await run_perdure(tenants, "namespace", "move", namespace, "--to", cell.cell)
        assert code == 0 and f"moved from cell {target} to {cell.cell}" in out, out + err
        await returning.signal(Gated.proceed)
        assert await returning.result(timeout=90) == ["r-1-done", "r-2-done", "r-3-done"]
        assert (await client.get_workflow_handle("mixed").describe()).status == "completed"
    assert count_lines(Path(ledger)).get("r-3") == 1
    assert await target_db["runs"].count_documents({"namespace": namespace}) == 0
