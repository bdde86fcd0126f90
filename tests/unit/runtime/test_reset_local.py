"""Reset in LocalEnvironment: the same API and rules as on a cell (docs/reset.md), no services."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator

import pytest

from perdure.platform.core import history as h
from perdure.tenants import (
    App,
    WorkflowNotFoundError,
    WorkflowResetError,
    workflow,
)
from perdure.tenants.testing import LocalEnvironment, replay

app = App("reset-tests")
calls: collections.Counter[str] = collections.Counter()


@app.activity
async def record(name: str) -> str:
    calls[name] += 1
    return f"{name}#{calls[name]}"


@app.workflow
class Collector:
    """An activity, then signals until ``wanted`` came, then another activity."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    @workflow.run
    async def run(self, wanted: int) -> list[str]:
        first = await workflow.execute_activity(record, "first", start_to_close_timeout=10)
        await workflow.wait_condition(lambda: len(self.notes) >= wanted)
        second = await workflow.execute_activity(record, "second", start_to_close_timeout=10)
        return [first, *self.notes, second]

    @workflow.signal
    def note(self, text: str) -> None:
        self.notes.append(text)

    @workflow.query
    def seen(self) -> list[str]:
        return list(self.notes)


@app.workflow
class Draws:
    """Draws an id at its start and one per signal (as code does for idempotency keys, child ids)."""

    def __init__(self) -> None:
        self.signals = 0

    @workflow.run
    async def run(self, wanted: int) -> list[str]:
        drawn = [str(workflow.uuid4())]
        while len(drawn) <= wanted:
            await workflow.wait_condition(lambda: self.signals >= len(drawn))
            drawn.append(str(workflow.uuid4()))
        return drawn

    @workflow.signal
    def go(self) -> None:
        self.signals += 1


@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    calls.clear()
    async with LocalEnvironment(app) as environment:
        yield environment


def _events(env: LocalEnvironment, workflow_id: str, run_id: str | None = None) -> list[h.HistoryEvent]:
    return h.history_from_json(env.history(workflow_id, run_id))


def _first_signal(events: list[h.HistoryEvent]) -> int:
    return next(e.event_id for e in events if isinstance(e, h.WorkflowExecutionSignaled))


async def _signalled_once(env: LocalEnvironment) -> tuple[str, int]:
    """A Collector waiting for a second signal after taking one; its run id and the point just before
    the signal (the first activity's result)."""
    handle = await env.start_workflow(Collector.run, 2, id="c")
    await env.idle()  # the first activity's result is in before the signal
    await handle.signal(Collector.note, "one")
    await env.idle()
    assert await handle.query(Collector.seen) == ["one"]
    events = _events(env, "c")
    point = max(
        e.event_id
        for e in events
        if isinstance(e, h.ActivityTaskCompleted) and e.event_id < _first_signal(events)
    )
    assert handle.run_id is not None
    return handle.run_id, point


async def test_a_reset_to_before_a_signal_applies_the_signal_again(env: LocalEnvironment) -> None:
    old_run, point = await _signalled_once(env)
    handle = env.get_workflow_handle("c")
    new_run = await handle.reset(point, reason="bad deploy")
    assert new_run != old_run and handle.run_id == new_run
    await handle.signal(Collector.note, "two")
    # The first activity's result came from the copied history; only the second ran again.
    assert await handle.result() == ["first#1", "one", "two", "second#1"]
    assert calls == {"first": 1, "second": 1}

    old = await handle.describe(run_id=old_run)
    assert (old.status, old.new_run_id, old.reset_run_id, old.reset_point) == (
        "terminated",
        new_run,
        new_run,
        point,
    )
    latest = await handle.describe()
    assert (latest.run_id, latest.reset_from_run_id, latest.reset_point) == (new_run, old_run, point)
    terminated = _events(env, "c", old_run)[-1]
    assert isinstance(terminated, h.WorkflowExecutionTerminated)
    assert (terminated.reason, terminated.new_run_id) == ("reset: bad deploy", new_run)

    events = _events(env, "c")
    old_events = _events(env, "c", old_run)
    # The prefix is the old run's, its started event naming the new run; then the reset event.
    assert [e.type for e in events[:point]] == [e.type for e in old_events[:point]]
    assert isinstance(events[0], h.WorkflowExecutionStarted)
    assert (events[0].run_id, events[0].original_run_id) == (new_run, old_run)
    marker = events[point]
    assert isinstance(marker, h.WorkflowExecutionReset)
    assert (marker.reset_from_run_id, marker.reset_point, marker.reapplied_signals) == (old_run, point, 1)
    signals = [e for e in events if isinstance(e, h.WorkflowExecutionSignaled)]
    assert [(s.signal_name, s.reapplied_from_run_id) for s in signals] == [
        ("note", old_run),
        ("note", None),
    ]


async def test_no_reapply_signals_drops_them(env: LocalEnvironment) -> None:
    _, point = await _signalled_once(env)
    handle = env.get_workflow_handle("c")
    await handle.reset(point, reapply_signals=False)
    await env.idle()
    assert await handle.query(Collector.seen) == []
    await handle.signal(Collector.note, "x")
    await handle.signal(Collector.note, "y")
    assert await handle.result() == ["first#1", "x", "y", "second#1"]


async def test_first_workflow_task_runs_the_code_again_from_the_top(env: LocalEnvironment) -> None:
    await _signalled_once(env)
    handle = env.get_workflow_handle("c")
    await handle.reset("first-workflow-task")
    await handle.signal(Collector.note, "two")
    # Nothing of the old run's activities was kept: the first ran again.
    assert await handle.result() == ["first#2", "one", "two", "second#1"]


async def test_last_workflow_task_of_a_closed_run_makes_a_new_run_and_leaves_the_old_one_closed(
    env: LocalEnvironment,
) -> None:
    handle = await env.start_workflow(Collector.run, 1, id="c")
    await handle.signal(Collector.note, "one")
    assert await handle.result() == ["first#1", "one", "second#1"]
    old_run = handle.run_id
    new_run = await handle.reset("last-workflow-task")
    # The last point is the second activity's result: the code completes again with it, running nothing.
    assert await handle.result() == ["first#1", "one", "second#1"]
    assert calls == {"first": 1, "second": 1}
    old = await handle.describe(run_id=old_run)
    assert (old.status, old.reset_run_id, old.new_run_id) == ("completed", new_run, None)


async def test_a_reset_sent_again_makes_one_run(env: LocalEnvironment) -> None:
    _, point = await _signalled_once(env)
    handle = env.get_workflow_handle("c")
    first = await handle.reset(point, request_id="r-1")
    again = await env.get_workflow_handle("c").reset(point, request_id="r-1")
    assert first == again
    assert len({e["type"] for e in env.history("c")}) > 0
    assert [r.state.run_id for r in env._runs["c"]][-1] == first and len(env._runs["c"]) == 2


async def test_bad_points_are_refused_naming_the_valid_ones(env: LocalEnvironment) -> None:
    old_run, _ = await _signalled_once(env)
    handle = env.get_workflow_handle("c")
    scheduled = next(e.event_id for e in _events(env, "c") if isinstance(e, h.ActivityTaskScheduled))
    with pytest.raises(
        WorkflowResetError, match=rf"event {scheduled} \(activity_task_scheduled\).*points are 1, "
    ):
        await handle.reset(scheduled)
    with pytest.raises(WorkflowResetError, match="history has events 1 to"):
        await handle.reset(999)
    with pytest.raises(WorkflowResetError, match="give an event id"):
        await handle.reset("yesterday")
    with pytest.raises(WorkflowNotFoundError):
        await env.get_workflow_handle("c").reset(1, run_id="no-such-run")
    # Nothing changed: the run still waits for its second signal.
    assert (await handle.describe()).run_id == old_run
    await handle.signal(Collector.note, "two")
    assert await handle.result() == ["first#1", "one", "two", "second#1"]


async def test_an_older_run_is_not_reset_while_the_current_one_is_open(env: LocalEnvironment) -> None:
    old_run, point = await _signalled_once(env)
    handle = env.get_workflow_handle("c")
    await handle.reset(point)
    with pytest.raises(WorkflowResetError, match="not the current run"):
        await handle.reset(point, run_id=old_run)


async def test_a_reset_is_billed_as_one_action_and_copies_nothing_into_the_bill(
    env: LocalEnvironment,
) -> None:
    _, point = await _signalled_once(env)
    before = collections.Counter(r.metric for r in env.usage)
    new_run = await env.get_workflow_handle("c").reset(point)
    await env.idle()
    added = collections.Counter(r.metric for r in env.usage) - before
    # The reset, and the copied history's pending work done again (no start, no signal billed again).
    assert added["reset"] == 1
    assert added["workflow_started"] == 0 and added["signal"] == 0
    assert [r.id for r in env.usage if r.metric == "reset"] == [f"{new_run}/{point + 1}"]


async def test_the_docs_example_ships_again_and_charges_once() -> None:
    from examples import reset_shipment as example

    example.charges.clear()
    example.LABEL_VERSION["current"] = "v1-broken"
    first, second = await example.main()
    assert first == ["charged-o-1", "shipped-o-1-to-1 Main St-label-v1-broken"]
    assert second == ["charged-o-1", "shipped-o-1-to-1 Main St-label-v2"]
    assert example.charges == {"o-1": 1}


async def test_signals_carried_over_follow_the_reset_event_and_the_run_replays(env: LocalEnvironment) -> None:
    """The carried signals are the new run's history right after the reset event: its first workflow
    task gives the code the point's activation, then them, in order; the commands it issued for them
    all follow. The run goes on and its history replays (its code's replay agrees with it)."""
    handle = await env.start_workflow(Collector.run, 4, id="c")
    await env.idle()
    for text in ("one", "two", "three"):
        await handle.signal(Collector.note, text)
    await env.idle()
    events = _events(env, "c")
    point = _first_signal(events) - 1  # the first activity's result
    await handle.reset(point)
    await env.idle()
    events = _events(env, "c")
    after = [e.type for e in events[point:]]
    assert after[:4] == ["workflow_execution_reset", *["workflow_execution_signaled"] * 3]
    assert await handle.query(Collector.seen) == ["one", "two", "three"]
    await handle.signal(Collector.note, "four")
    assert await handle.result() == ["first#1", "one", "two", "three", "four", "second#1"]
    replay(app, env.history("c"))


async def test_ids_drawn_after_the_point_are_new_and_replay_the_same(env: LocalEnvironment) -> None:
    """The new run replays the copied prefix with the old run's randomness and draws new ids from the
    point on (seeded by the run the reset made, recorded in its reset event): a replay draws the same,
    and a reset of the reset run keeps what that run drew before its own point."""
    handle = await env.start_workflow(Draws.run, 2, id="d")
    await handle.signal(Draws.go)
    await handle.signal(Draws.go)
    old = await handle.result()
    events = _events(env, "d")
    signals = [e.event_id for e in events if isinstance(e, h.WorkflowExecutionSignaled)]
    await handle.reset(signals[1], reapply_signals=False)  # decides again at the second signal
    new = await handle.result()
    assert new[:2] == old[:2] and new[2] != old[2]
    replay(app, env.history("d"))
    # The reset run reset again, to its first point: everything is drawn anew, once more.
    await handle.reset("first-workflow-task", reapply_signals=True)
    again = await handle.result()
    assert again[0] not in (old[0], new[0]) and len(set(again)) == 3
    replay(app, env.history("d"))
