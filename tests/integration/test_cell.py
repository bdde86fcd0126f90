"""The cell on the real services: engine, activities, timers, signals, crashes, fencing, dead letters."""

from __future__ import annotations

from pathlib import Path

from perdure.platform.core import history as h

from .cell_harness import closed_runs, completed_activities, count_lines, eventually, payload_value
from .conftest import CellFactory


def _valid(events: list[h.HistoryEvent]) -> None:
    h.check_contiguous(events)
    assert sum(h.is_close_event(e) for e in events) == 1 and h.is_close_event(events[-1])


async def test_activities_retries_a_timer_and_a_signal(make_cell: CellFactory, tmp_path: Path) -> None:
    cell = await make_cell(partitions=2)
    await cell.start_process().start()
    ledger = tmp_path / "ledger"
    async with closed_runs(cell) as closed, await cell.client() as client:
        await client.start_workflow("Pipeline", str(ledger), id="pipe")
        await client.signal("pipe", "approve")
        result = (await closed.wait({"pipe"}))["pipe"]
        history = await client.history("pipe")
    assert result.status == "completed"
    assert payload_value(result) == ["one-done", "two-ok-3", "three-done"]
    _valid(history)
    assert [e.failed_attempt for e in history if isinstance(e, h.ActivityTaskRetryScheduled)] == [1, 2]
    assert any(isinstance(e, h.TimerFired) for e in history)
    assert count_lines(ledger) == {"one": 1, "two": 3, "three": 1}


async def test_a_cell_killed_between_steps_resumes_without_rerunning_them(
    make_cell: CellFactory, tmp_path: Path
) -> None:
    cell = await make_cell(partitions=2)
    first = await cell.start_process().start()
    ledger = tmp_path / "ledger"
    async with closed_runs(cell) as closed, await cell.client() as client:
        await client.start_workflow("Gated", str(ledger), "crash", id="gated")

        async def two_steps_done() -> None:
            assert await completed_activities(client, "gated") == 2

        await eventually(two_steps_done)
        first.kill()  # SIGKILL: no goodbye, no commit of anything in flight
        await first.wait()
        await client.signal("gated", "proceed")  # waits in Kafka while the cell is down
        await cell.start_process().start()
        result = (await closed.wait({"gated"}))["gated"]
        history = await client.history("gated")
    assert payload_value(result) == ["crash-1-done", "crash-2-done", "crash-3-done"]
    counts = count_lines(ledger)
    assert counts["crash-1"] == 1 and counts["crash-2"] == 1 and counts["crash-3"] >= 1
    _valid(history)


async def test_partitions_of_a_killed_process_move_to_the_other(
    make_cell: CellFactory, tmp_path: Path
) -> None:
    cell = await make_cell(partitions=4)
    doomed = await cell.start_process().start()
    survivor = await cell.start_process().start()
    ledger = tmp_path / "ledger"
    ids = [f"w{i}" for i in range(40)]
    async with closed_runs(cell) as closed, await cell.client() as client:
        await client.start_workflows("ThreeSteps", [(i, [str(ledger), i]) for i in ids])
        doomed.kill()
        await survivor.wait_for_log(r'"partitions assigned".*"partitions": \[0, 1, 2, 3\]', timeout=60)
        results = await closed.wait(ids, timeout=120)
        for workflow_id in ids:
            _valid(await client.history(workflow_id))
    assert {r.status for r in results.values()} == {"completed"}
    counts = count_lines(ledger)
    assert all(counts.get(f"{i}-{n}", 0) >= 1 for i in ids for n in (1, 2, 3))


async def test_timers_due_during_an_outage_fire_after_restart(make_cell: CellFactory) -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    cell = await make_cell(partitions=2)
    process = await cell.start_process().start()
    ids = ["s1", "s2", "s3"]
    # Long enough that no timer falls due before the process has stopped, even on a loaded machine.
    seconds = 5.0
    async with closed_runs(cell) as closed, await cell.client() as client:
        await client.start_workflows("Sleeper", [(i, [seconds]) for i in ids])
        started: dict[str, datetime] = {}

        async def all_timers_started() -> None:
            for workflow_id in ids:
                events = [e for e in await client.history(workflow_id) if isinstance(e, h.TimerStarted)]
                assert events
                started[workflow_id] = events[0].timestamp

        await eventually(all_timers_started)
        process.kill(15)
        assert await process.wait() == 0
        down_since = datetime.now(UTC)
        # The outage itself: it lasts until every timer has fallen due while no process runs.
        due = max(started.values()) + timedelta(seconds=seconds)
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds() + 0.5))
        await cell.start_process().start()
        results = await closed.wait(ids)
        for workflow_id in ids:
            fired = [e for e in await client.history(workflow_id) if isinstance(e, h.TimerFired)]
            assert len(fired) == 1 and fired[0].timestamp > down_since
    assert {payload_value(r) for r in results.values()} == {"woke"}


async def test_chaos_five_sigkills_lose_nothing(make_cell: CellFactory, tmp_path: Path) -> None:
    import asyncio
    import random

    cell = await make_cell(partitions=4)
    process = await cell.start_process().start()
    ledger = tmp_path / "ledger"
    ids = [f"chaos-{i}" for i in range(500)]
    chance = random.Random(20261128)
    async with closed_runs(cell) as closed, await cell.client() as client:
        await client.start_workflows("ThreeSteps", [(i, [str(ledger), i]) for i in ids])
        for _ in range(5):
            await asyncio.sleep(chance.uniform(0.2, 1.5))  # a random moment of the run, not a wait for it
            process.kill()
            await process.wait()
            process = await cell.start_process().start()
        results = await closed.wait(ids, timeout=240)
        for workflow_id in ids:
            _valid(await client.history(workflow_id))
    assert {r.status for r in results.values()} == {"completed"}
    counts = count_lines(ledger)
    missing = [f"{i}-{n}" for i in ids for n in (1, 2, 3) if counts.get(f"{i}-{n}", 0) < 1]
    assert not missing
    duplicates = sum(counts.values()) - 3 * len(ids)
    print(f"\nchaos: 500 workflows, 5 SIGKILLs, {duplicates} duplicate activity executions")


async def test_sigterm_finishes_work_leaves_the_group_and_loses_nothing(
    make_cell: CellFactory, tmp_path: Path
) -> None:
    cell = await make_cell(partitions=4)
    leaving = await cell.start_process().start()
    staying = await cell.start_process().start()
    ledger = tmp_path / "ledger"
    ids = [f"t{i}" for i in range(30)]
    async with closed_runs(cell) as closed, await cell.client() as client:
        await client.start_workflows("ThreeSteps", [(i, [str(ledger), i]) for i in ids])
        leaving.kill(15)
        assert await leaving.wait() == 0
        await leaving.wait_for_log(r'"cell stopped"')
        # It left the group: the other process is given every partition without waiting for a timeout.
        await staying.wait_for_log(r'"partitions assigned".*"partitions": \[0, 1, 2, 3\]', timeout=30)
        results = await closed.wait(ids, timeout=120)
    assert {r.status for r in results.values()} == {"completed"}
