"""Workers' reports handed by a cell process's relay straight to its own engine (``report_handoff``):
they skip Kafka, every activity is recorded once, and reports of partitions another process owns still
go through Kafka to it."""

from __future__ import annotations

from pathlib import Path

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.tenancy.model import Quota
from perdure.tenants.client import Client

from .cell_app import ThreeSteps
from .cell_harness import TenantCell, admissions, count_lines
from .conftest import TenantCellFactory


async def _run_three_steps(tenants: TenantCell, ledger: Path, runs: int) -> None:
    async with await Client.connect(tenants.connection_string("a")) as client:
        handles = [
            await client.start_workflow(ThreeSteps.run, str(ledger), f"r{i}", id=f"handoff-{i}")
            for i in range(runs)
        ]
        for i, handle in enumerate(handles):
            assert await handle.result(timeout=60) == [f"r{i}-1-done", f"r{i}-2-done", f"r{i}-3-done"]
    ops = await OpsClient.connect(tenants.cell.settings, tenants.a.record.name)
    try:
        for i in range(runs):
            history = await ops.history(f"handoff-{i}")
            h.check_contiguous(history)
            assert sum(isinstance(e, h.ActivityTaskCompleted) for e in history) == 3
            assert sum(isinstance(e, h.WorkflowExecutionCompleted) for e in history) == 1
    finally:
        await ops.close()
    # Each step ran once: a report applied twice would not run it again, but a lost one would.
    assert count_lines(ledger) == {f"r{i}-{step}": 1 for i in range(runs) for step in (1, 2, 3)}


async def _reports_in_kafka(tenants: TenantCell) -> int:
    namespace = tenants.a.record.name
    return sum(
        isinstance(envelope.message, m.ActivityCompleted)
        for _, envelope in await admissions(tenants.cell, namespace)
    )


async def test_reports_of_the_engines_own_partitions_skip_kafka(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    await _run_three_steps(tenants, tmp_path / "ledger", runs=3)
    assert await _reports_in_kafka(tenants) == 0


async def test_without_the_handoff_every_report_goes_through_kafka(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota()}, PERDURE_REPORT_HANDOFF="false")
    await _run_three_steps(tenants, tmp_path / "ledger", runs=2)
    assert await _reports_in_kafka(tenants) == 2 * 3


async def test_reports_of_another_process_partitions_reach_it_through_kafka(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    # Two processes share the cell's partitions, and each one's relay takes reports of every run (they
    # consume the namespace's one reports queue): a report of the other's partition must reach it.
    tenants = await make_tenant_cell({"a": Quota()}, partitions=4)
    second = tenants.cell.start_process("q")
    await second.start()
    await tenants.cell.processes[0].wait_for_log(r'"partitions assigned"')
    await second.wait_for_log(r'"partitions assigned"')
    await _run_three_steps(tenants, tmp_path / "ledger", runs=8)
