"""The ``Batch`` workflow in LocalEnvironment with virtual time: the target namespace's runs are a list
here, and the activities that count, select and act on them are the test's own, under the platform's
names (an apply can fail after acting on part of its page, as one cut by a crash does)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from perdure.platform.control import batch_workflow
from perdure.platform.control.batch_workflow import Batch
from perdure.platform.protocol.batch_wire import BatchDefinition, PageOutcome, RunResult, SelectedRun
from perdure.tenants import App, ApplicationError
from perdure.tenants.testing import LocalEnvironment

pytestmark = pytest.mark.timeout(60)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
app = App("batch-tests")
app.workflow(Batch)
WORKFLOW_ID = "batch/ns/b1"


@dataclass
class FakeRun:
    run_id: str
    workflow_id: str
    start_time: datetime
    status: str = "running"
    terminations: int = 0


@dataclass
class World:
    env: LocalEnvironment | None = None
    runs: list[FakeRun] = field(default_factory=list)
    applied_at: list[tuple[datetime, int]] = field(default_factory=list)  # when, how many runs
    chains: set[str] = field(default_factory=set)
    apply_calls: int = 0
    cut: tuple[int, int] | None = None  # the apply call of this number acts on so many runs, then fails
    bad_query: bool = False
    stop_after: int | None = None  # applies, then the test's stop arrives

    def now(self) -> datetime:
        assert self.env is not None
        return self.env.now()


world = World()


def make_runs(count: int, closed: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    # Runs started in pairs at the same moment: the cursor must tell them apart by run id.
    world.runs = [
        FakeRun(
            run_id=f"r{n:04d}",
            workflow_id=f"w{n}",
            start_time=T0 - timedelta(hours=1) + timedelta(seconds=n // 2),
            status="completed" if n in closed else "running",
        )
        for n in range(count)
    ]


@app.activity(name="count_batch_runs")
async def count_runs(namespace: str, query: str) -> int:
    if world.bad_query:
        raise ApplicationError("bad query at column 1: unknown field 'Nope'", non_retryable=True)
    return len(world.runs)


@app.activity(name="select_batch_runs")
async def select_runs(
    namespace: str, query: str, after_time: datetime | None, after_run_id: str | None, limit: int
) -> list[SelectedRun]:
    return select(after_time, after_run_id, limit)


def select(after_time: datetime | None, after_run_id: str | None, limit: int) -> list[SelectedRun]:
    ordered = sorted(world.runs, key=lambda r: (r.start_time, r.run_id), reverse=True)
    if after_time is not None and after_run_id is not None:
        ordered = [r for r in ordered if (r.start_time, r.run_id) < (after_time, after_run_id)]
    return [
        SelectedRun(run_id=r.run_id, workflow_id=r.workflow_id, start_time=r.start_time, status=r.status)
        for r in ordered[:limit]
    ]


@app.activity(name="apply_batch_page")
async def apply(
    definition: BatchDefinition, chain: str, runs: list[SelectedRun], next_limit: int, began: datetime
) -> PageOutcome:
    """As the platform's: a run terminated already counts as this batch's (a retry meets the runs its
    first attempt terminated), one closed otherwise is skipped."""
    world.chains.add(chain)
    world.apply_calls += 1
    by_id = {r.run_id: r for r in world.runs}
    results = []
    for n, selected in enumerate(runs):
        if world.cut == (world.apply_calls, n):
            raise RuntimeError("the worker died")
        run = by_id[selected.run_id]
        if run.status == "terminated":
            outcome = "succeeded"
        elif run.status != "running":
            outcome = "skipped"
        else:
            run.status, run.terminations = "terminated", run.terminations + 1
            outcome = "succeeded"
        results.append(RunResult(run_id=run.run_id, workflow_id=run.workflow_id, outcome=outcome))
    world.applied_at.append((world.now(), len(runs)))
    if world.stop_after == world.apply_calls:
        assert world.env is not None
        handle = world.env.get_workflow_handle(WORKFLOW_ID)
        asyncio.get_running_loop().create_task(handle.signal(Batch.stop, "changed my mind"))
    last = min(runs, key=lambda r: (r.start_time, r.run_id))
    return PageOutcome(results=results, next_page=select(last.start_time, last.run_id, next_limit))


@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    global world
    world = World()
    async with LocalEnvironment(app, start_time=T0) as environment:
        world.env = environment
        yield environment


def definition(rate: float = 10.0, **changes: Any) -> BatchDefinition:
    fields: dict[str, Any] = {
        "namespace": "ns",
        "batch_id": "b1",
        "operation": "terminate",
        "query": "ExecutionStatus = 'Running'",
        "reason": "cleanup",
        "rate": rate,
        **changes,
    }
    return BatchDefinition(**fields)


async def run_batch(env: LocalEnvironment, batch: BatchDefinition) -> dict[str, Any]:
    handle = await env.start_workflow(Batch.run, batch, id=WORKFLOW_ID)
    described: dict[str, Any] = await handle.result()
    return described


async def test_every_run_is_terminated_and_counted_once_at_the_rate(env: LocalEnvironment) -> None:
    make_runs(23)
    described = await run_batch(env, definition(rate=2.5))  # pages of 5, one every 2 s
    assert [r.terminations for r in world.runs] == [1] * 23
    assert described["state"] == "completed"
    assert described["counts"] == {"total_estimate": 23, "succeeded": 23, "failed": 0, "skipped": 0}
    assert [count for _, count in world.applied_at] == [5, 5, 5, 5, 3]
    gaps = [b - a for (a, _), (b, _) in zip(world.applied_at, world.applied_at[1:], strict=False)]
    # (Each page's time runs from its workflow task; the activity saw the clock a little later.)
    assert all(gap >= timedelta(seconds=1.99) for gap in gaps), gaps
    # 20 runs had their time before the last page: the rate held over the whole batch.
    began = datetime.fromisoformat(described["started_at"])
    finished = datetime.fromisoformat(described["finished_at"])
    assert finished - began >= timedelta(seconds=8)
    assert len(world.chains) == 1


async def test_an_apply_cut_halfway_is_retried_and_its_runs_counted_once(env: LocalEnvironment) -> None:
    make_runs(12)
    world.cut = (2, 3)  # the second page's first apply dies after three of its five runs
    described = await run_batch(env, definition(rate=2.5))
    assert world.apply_calls == 4  # three pages, the second twice
    assert [r.terminations for r in world.runs] == [1] * 12
    assert described["counts"] == {"total_estimate": 12, "succeeded": 12, "failed": 0, "skipped": 0}


async def test_closed_runs_are_skipped_not_counted_as_affected(env: LocalEnvironment) -> None:
    make_runs(8, closed={1, 4, 5})
    described = await run_batch(env, definition(rate=100.0))
    assert described["counts"] == {"total_estimate": 8, "succeeded": 5, "failed": 0, "skipped": 3}
    assert sum(r.terminations for r in world.runs) == 5


async def test_it_continues_as_new_and_keeps_its_cursor_and_counts(
    env: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_workflow, "PAGES_PER_RUN", 2)
    make_runs(21)
    handle = await env.start_workflow(Batch.run, definition(rate=1.0), id=WORKFLOW_ID)  # pages of 2
    first_run = handle.run_id
    described = await handle.result()
    assert env.get_workflow_handle(WORKFLOW_ID).run_id != first_run
    assert [r.terminations for r in world.runs] == [1] * 21
    assert described["counts"]["succeeded"] == 21 and described["counts"]["total_estimate"] == 21
    assert datetime.fromisoformat(described["started_at"]) < T0 + timedelta(seconds=1)
    assert len(world.chains) == 1  # every run of the chain names its requests the same way


async def test_a_stop_ends_it_after_the_page_in_flight(env: LocalEnvironment) -> None:
    make_runs(40)
    world.stop_after = 3
    described = await run_batch(env, definition(rate=0.5))  # pages of 1, one every 2 s
    assert described["state"] == "stopped" and described["stop_reason"] == "changed my mind"
    done = described["counts"]["succeeded"]
    assert 3 <= done <= 4 and sum(r.terminations for r in world.runs) == done


async def test_a_refused_query_fails_the_batch_with_the_reason(env: LocalEnvironment) -> None:
    make_runs(3)
    world.bad_query = True
    described = await run_batch(env, definition())
    assert described["state"] == "failed"
    assert "unknown field 'Nope'" in described["last_error"]
    assert sum(r.terminations for r in world.runs) == 0
