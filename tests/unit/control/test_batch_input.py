"""What a batch is given and what it keeps: the definition's checks, the rate as the CLI reads it, page
sizes and pauses at a rate, and the progress that counts a page's runs once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from perdure.platform.cli.batch_commands import parse_rate
from perdure.platform.control.batch_requests import BatchError
from perdure.platform.control.batch_workflow import MAX_PAGE, page_size, pause_after
from perdure.platform.protocol.batch_wire import (
    BatchDefinition,
    BatchProgress,
    RunResult,
    SelectedRun,
    batch_request_id,
    progress_text,
)
from perdure.platform.protocol.schedule_wire import first_error

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def definition(**changes: Any) -> BatchDefinition:
    fields: dict[str, Any] = {
        "namespace": "ns",
        "batch_id": "b1",
        "operation": "terminate",
        "query": "ExecutionStatus = 'Running'",
        **changes,
    }
    return BatchDefinition(**fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rate": 0}, "rate 0/s: between 0.01/s and 1000/s"),
        ({"rate": -5}, "rate -5/s: between"),
        ({"rate": 1e6}, "rate 1e+06/s: between"),
        ({"rate": float("nan")}, "rate nan/s: between"),
        ({"query": "  "}, "a batch needs a query"),
        ({"batch_id": "no spaces"}, "batch id 'no spaces': 1 to 120 letters"),
        ({"batch_id": "x" * 121}, "batch id"),
        ({"operation": "signal"}, "a batch signal needs the signal's name"),
        ({"signal_name": "go"}, "a batch terminate sends no signal"),
        ({"operation": "pause"}, "operation: Input should be"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_a_bad_definition_is_refused_with_why(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        definition(**changes)
    assert first_error(caught.value).startswith(message), first_error(caught.value)


def test_a_signal_batch_carries_its_name_and_input() -> None:
    batch = definition(operation="signal", signal_name="go", signal_input=[{"n": 1}], rate=0.5)
    assert batch.signal_name == "go" and batch.rate == 0.5
    # Each run's request id is the batch's chain and the run: the same on every attempt.
    assert (
        batch_request_id("chain-1", "run-9") == batch_request_id("chain-1", "run-9") == "batch:chain-1:run-9"
    )


@pytest.mark.parametrize(
    ("text", "rate"),
    [("50", 50.0), ("50/s", 50.0), (" 120 / m ", 2.0), ("3600/h", 1.0), ("0.5/s", 0.5), (".5", 0.5)],
)
def test_rates_as_typed(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "50/d", "-5", "5/s/s", "1e3"])
def test_a_rate_that_does_not_read_is_refused(text: str) -> None:
    with pytest.raises(BatchError, match="--rate"):
        parse_rate(text)


def test_pages_hold_two_seconds_of_runs_at_the_rate_within_bounds() -> None:
    assert page_size(50) == 100
    assert page_size(1) == 2 and page_size(0.01) == 1
    assert page_size(1000) == MAX_PAGE


def test_the_pause_after_a_page_is_what_is_left_of_its_share_of_time() -> None:
    assert pause_after(T0, T0 + timedelta(seconds=0.1), 25, 50) == timedelta(seconds=0.4)
    assert pause_after(T0, T0 + timedelta(seconds=2), 25, 50) == timedelta(0)  # it took longer already


def run(n: int, second: int = 0) -> SelectedRun:
    return SelectedRun(
        run_id=f"r{n}", workflow_id=f"w{n}", start_time=T0 + timedelta(seconds=second), status="running"
    )


def result(n: int, outcome: Any, detail: str = "") -> RunResult:
    return RunResult(run_id=f"r{n}", workflow_id=f"w{n}", outcome=outcome, detail=detail)


def test_progress_counts_each_run_of_a_page_once_and_moves_the_cursor_past_it() -> None:
    progress = BatchProgress(total_estimate=5)
    page = [run(3, 2), run(2, 1), run(1, 1)]
    results = [
        result(3, "succeeded"),
        result(2, "failed", "refused: namespace suspended"),
        result(1, "skipped"),
        result(3, "succeeded"),  # the same run again: not counted twice
        result(9, "succeeded"),  # not of this page: not counted
    ]
    progress.record(page, results)
    assert (progress.succeeded, progress.failed, progress.skipped, progress.done) == (1, 1, 1, 3)
    assert progress.cursor == (T0 + timedelta(seconds=1), "r1")  # the oldest: the next page is after it
    assert progress.last_error == "w2 (r2): refused: namespace suspended"
    assert [f.run_id for f in progress.recent_failures] == ["r2"]
    assert progress_text(progress.model_dump() | {"succeeded": 1}) == (
        "3/5 done: 1 succeeded, 1 failed, 1 skipped"
    )
    assert progress_text({"succeeded": 2}) == "2 done: 2 succeeded, 0 failed, 0 skipped"


def test_an_empty_page_leaves_the_cursor() -> None:
    progress = BatchProgress()
    progress.record([run(1)], [result(1, "succeeded")])
    progress.record([], [])
    assert progress.cursor == (T0, "r1")
