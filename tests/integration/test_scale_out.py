"""Scale-out on one cell: three ``perdure cell run`` processes share its partitions (one Kafka consumer
group); one is SIGKILLed mid-load and a fourth started. No run is lost or stuck, no step completed
before the kill runs again, the partitions end spread over the live processes; the figures are printed
(time to recover, runs per process)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path

from perdure.platform.core import history as h
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.tenancy.model import Quota
from perdure.tenants import Client

from .cell_app import ThreeSteps
from .cell_harness import CellProcess, count_lines, eventually
from .conftest import TenantCellFactory

PARTITIONS = 6
RUNS = 150


def _ownership(processes: list[CellProcess]) -> list[tuple[datetime, str, str, list[int]]]:
    """Every process's partition events, in time order: (when, process, "assigned"/"revoked", which)."""
    events = []
    for process in processes:
        for kind in ("assigned", "revoked"):
            for line in process.lines(f'"partitions {kind}"'):
                record = json.loads(line)
                when = datetime.fromisoformat(record["timestamp"])
                events.append((when, process.name, kind, list(record["partitions"])))
    return sorted(events)


def _owner_at(events: list[tuple[datetime, str, str, list[int]]], partition: int, moment: datetime) -> str:
    owner = "-"
    for when, process, kind, partitions in events:
        if when > moment:
            break
        if partition in partitions:
            owner = process if kind == "assigned" else ("-" if owner == process else owner)
    return owner


async def test_three_processes_share_a_cell_and_a_killed_one_is_replaced_without_loss(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota.unthrottled()}, partitions=PARTITIONS, start=False)
    cell = tenants.cell
    processes = [await cell.start_process().start() for _ in range(3)]

    async def spread_over(live: list[CellProcess]) -> None:
        latest = {}
        for _, process, kind, partitions in _ownership(live):
            latest[process] = partitions if kind == "assigned" else []
        owned = [p for process in live for p in latest.get(process.name, [])]
        assert sorted(owned) == list(range(PARTITIONS)), latest  # each partition once, none left over
        assert all(latest.get(process.name) for process in live), latest  # every process has some

    await eventually(lambda: spread_over(processes), timeout=60)
    ledger = tmp_path / "ledger"
    ids = [f"r{i}" for i in range(RUNS)]
    async with await Client.connect(tenants.connection_string("a"), request_timeout=180) as client:
        handles = await asyncio.gather(
            *(client.start_workflow(ThreeSteps.run, str(ledger), i, id=i) for i in ids)
        )

        async def under_way() -> None:
            assert sum(count_lines(ledger).values()) >= RUNS  # a third of the steps done

        await eventually(under_way, timeout=120, every=0.05)
        victim = processes[1]
        victim.kill()
        killed_at = datetime.now().astimezone()
        killed = time.monotonic()
        await victim.wait()
        processes.append(await cell.start_process().start())
        live = [p for p in processes if p is not victim]
        await eventually(lambda: spread_over(live), timeout=60)
        rebalanced = time.monotonic() - killed
        results = await asyncio.gather(*(handle.result(timeout=240) for handle in handles))
        all_done = time.monotonic() - killed
    assert results == [[f"{i}-1-done", f"{i}-2-done", f"{i}-3-done"] for i in ids]

    counts = count_lines(ledger)
    assert not [f"{i}-{n}" for i in ids for n in (1, 2, 3) if counts.get(f"{i}-{n}", 0) < 1]  # none lost
    ops = await OpsClient.connect(cell.settings, tenants.a.record.name)
    events = _ownership(processes)
    runs_per_process: dict[str, int] = {}
    repeated_after_completion = []
    try:
        for workflow_id in ids:
            history = await ops.history(workflow_id)
            completions = [e for e in history if isinstance(e, h.ActivityTaskCompleted)]
            assert len(completions) == 3, workflow_id  # each step recorded once
            scheduled = {
                e.event_id: n
                for n, e in enumerate((e for e in history if isinstance(e, h.ActivityTaskScheduled)), 1)
            }
            for completed in completions:
                # A step recorded as completed before the kill is never run again (a step in flight at
                # the kill may run twice: at least once, as Temporal's activities).
                step = scheduled[completed.scheduled_event_id]
                if completed.timestamp < killed_at and counts[f"{workflow_id}-{step}"] != 1:
                    repeated_after_completion.append(f"{workflow_id}-{step}")
            closed = history[-1]
            assert isinstance(closed, h.WorkflowExecutionCompleted)
            document = await ops.store.latest_run(tenants.a.record.name, workflow_id)
            assert document is not None
            owner = _owner_at(events, int(document["partition"]), closed.timestamp)
            runs_per_process[owner] = runs_per_process.get(owner, 0) + 1
    finally:
        await ops.close()
    assert not repeated_after_completion
    duplicates = sum(counts.values()) - 3 * RUNS
    print(
        f"\nscale-out: {RUNS} runs of 3 steps on {PARTITIONS} partitions, 3 processes, one SIGKILLed and a "
        f"fourth started: partitions spread again {rebalanced:.1f} s after the kill, every run done "
        f"{all_done:.1f} s after it; runs closed per process {dict(sorted(runs_per_process.items()))}; "
        f"{duplicates} step(s) in flight at the kill ran twice"
    )
    assert set(runs_per_process) - {"-"} >= {p.name for p in live}  # the newcomer took its share
