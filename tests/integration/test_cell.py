"""The cell on the real services: engine, activities, timers, signals, crashes, fencing, dead letters."""

from __future__ import annotations

from pathlib import Path

from perdure.platform.core import history as h

from .cell_harness import closed_runs, count_lines, payload_value
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
