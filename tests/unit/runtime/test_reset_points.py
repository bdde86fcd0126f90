"""The pure reset computation (platform/core/reset.py) and the state machine's reset, without services:
which events are reset points, what is refused and how, which signals are carried over, what the new
run's history and first outbox hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.payloads import default_converter
from perdure.platform.core.reset import (
    ResetRefused,
    plan_reset,
    reset_points,
    reset_run_id,
    reset_target,
    resolve_point,
    signals_after,
)
from perdure.platform.core.run_state import rebuild_state
from perdure.platform.core.start_rules import fresh_run_id
from perdure.platform.core.state_machine import ExecutionStateMachine

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class History:
    """A history written by hand, event ids in order."""

    def __init__(self) -> None:
        self.events: list[h.HistoryEvent] = []

    def add(self, event_type: type[Any], **fields: Any) -> int:
        event_id = len(self.events) + 1
        self.events.append(
            event_type(event_id=event_id, timestamp=T0 + timedelta(seconds=event_id), **fields)
        )
        return event_id


def _started(history: History) -> int:
    return history.add(
        h.WorkflowExecutionStarted, workflow_type="Flow", workflow_id="wf", run_id="old", namespace="ns"
    )


def _activity(history: History, seq: int) -> int:
    return history.add(
        h.ActivityTaskScheduled,
        seq=seq,
        activity_type="act",
        options=h.ActivityOptions(start_to_close_timeout=timedelta(seconds=30)),
    )


def _signal(history: History, text: str) -> int:
    return history.add(
        h.WorkflowExecutionSignaled,
        signal_name="note",
        input=default_converter.to_payloads([text]),
        request_id=f"sig-{text}",
    )


def _workflow() -> tuple[History, dict[str, int]]:
    """start; activity 1 scheduled, started, completed; signal a; timer started; signal b (parks the
    run: its task fails); signal c while parked; redriven; activity 2 scheduled; child started and
    closed; signal d; child 2 initiated; signal e (child 2 pending)."""
    history = History()
    ids = {"start": _started(history)}
    ids["scheduled1"] = _activity(history, 1)
    history.add(h.ActivityTaskStarted, scheduled_event_id=ids["scheduled1"], attempt=1)
    ids["completed1"] = history.add(h.ActivityTaskCompleted, scheduled_event_id=ids["scheduled1"], attempt=1)
    ids["a"] = _signal(history, "a")
    ids["timer"] = history.add(
        h.TimerStarted, seq=2, duration=timedelta(hours=1), fire_at=T0 + timedelta(hours=1)
    )
    ids["b"] = _signal(history, "b")
    ids["failed"] = history.add(h.WorkflowTaskFailed, cause="code_error", message="boom")
    ids["c"] = _signal(history, "c")
    ids["redriven"] = history.add(h.WorkflowTaskRedriven, request_id="r")
    ids["scheduled2"] = _activity(history, 3)
    ids["child"] = history.add(
        h.StartChildWorkflowExecutionInitiated, seq=4, workflow_type="Kid", workflow_id="kid"
    )
    ids["child_closed"] = history.add(
        h.ChildWorkflowExecutionClosed, initiated_event_id=ids["child"], outcome="completed"
    )
    ids["d"] = _signal(history, "d")
    ids["child2"] = history.add(
        h.StartChildWorkflowExecutionInitiated, seq=5, workflow_type="Kid", workflow_id="kid-2"
    )
    ids["e"] = _signal(history, "e")
    return history, ids


def test_reset_points_are_the_start_and_activations_the_code_took_in_a_task_of_their_own() -> None:
    history, ids = _workflow()
    # Not: commands, informational events, the failed task, a signal while parked ("c"), a signal while a
    # child is pending ("e"). A signal that came in a task which then failed ("b") is a point: resetting
    # there gives it to the (corrected) code again.
    assert reset_points(history.events) == [
        1,
        ids["completed1"],
        ids["a"],
        ids["b"],
        ids["child_closed"],
        ids["d"],
    ]


def test_no_point_at_or_after_the_close() -> None:
    history = History()
    _started(history)
    signal = _signal(history, "a")
    history.add(h.WorkflowExecutionCompleted)
    _signal(history, "late")  # impossible in practice; a close ends the points whatever follows
    assert reset_points(history.events) == [1, signal]


def test_names_resolve_to_the_first_and_last_points() -> None:
    history, ids = _workflow()
    assert resolve_point(history.events, "first-workflow-task") == 1
    assert resolve_point(history.events, "last-workflow-task") == ids["d"]
    assert resolve_point(history.events, ids["a"]) == ids["a"]


@pytest.mark.parametrize(
    ("which", "says"),
    [
        ("scheduled1", r"event 2 \(activity_task_scheduled\) is not a workflow task's activation"),
        ("c", r"event 9 \(workflow_execution_signaled\) came while the run was parked or had a child"),
        ("e", r"came while the run was parked or had a child pending"),
    ],
)
def test_a_point_that_is_none_is_refused_naming_the_valid_ones(which: str, says: str) -> None:
    history, ids = _workflow()
    with pytest.raises(ResetRefused, match=says) as refused:
        resolve_point(history.events, ids[which])
    assert str(refused.value).endswith("the reset points are 1, 4, 5, 7, 13, 14")


@pytest.mark.parametrize("to", [0, -1, 99])
def test_an_event_id_out_of_range_is_refused(to: int) -> None:
    history, _ = _workflow()
    with pytest.raises(ResetRefused, match="history has events 1 to 16"):
        resolve_point(history.events, to)


def test_a_long_list_of_points_is_shortened_in_the_refusal() -> None:
    history = History()
    _started(history)
    for i in range(100):
        _signal(history, str(i))
    with pytest.raises(ResetRefused, match=r"1, 2, 3, .*\(81 more\).*, 101$"):
        resolve_point(history.events, 500)


@pytest.mark.parametrize("to", ["yesterday", True, 1.5, None])
def test_a_target_that_is_neither_an_id_nor_a_name_is_refused_before_it_is_sent(to: object) -> None:
    with pytest.raises(ResetRefused, match="give an event id"):
        reset_target(to)


def test_signals_after_the_point_then_those_waiting_are_carried_over_in_order() -> None:
    history, ids = _workflow()
    waiting: list[m.RunMessage] = [
        m.SignalWorkflow(request_id="sig-f", signal_name="note"),
        m.CancelWorkflowRequest(request_id="cancel"),  # not a signal: not carried over
    ]
    carried = signals_after(history.events, ids["a"], waiting)
    assert [s.request_id for s in carried] == ["sig-b", "sig-c", "sig-d", "sig-e", "sig-f"]
    assert {s.reapplied_from_run_id for s in carried} == {"old"}
    assert signals_after(history.events, ids["e"]) == []


def test_the_plan_copies_the_prefix_names_the_new_run_and_records_the_reset() -> None:
    history, ids = _workflow()
    state = rebuild_state(history.events)
    reset = m.ResetWorkflow(request_id="r-1", to=ids["a"], reason="bad deploy")
    plan = plan_reset(state, history.events, reset, "new", T0 + timedelta(days=1))
    point = ids["a"]
    assert plan.point == point and len(plan.events) == point + 1
    assert plan.events[1:point] == history.events[1:point]
    started = plan.events[0]
    assert isinstance(started, h.WorkflowExecutionStarted)
    assert (started.run_id, started.original_run_id, started.timestamp) == (
        "new",
        "old",
        T0 + timedelta(seconds=1),
    )
    marker = plan.events[-1]
    assert isinstance(marker, h.WorkflowExecutionReset)
    assert (marker.event_id, marker.reset_from_run_id, marker.reset_point, marker.reason) == (
        point + 1,
        "old",
        point,
        "bad deploy",
    )
    assert marker.reapplied_signals == len(plan.signals) == 4
    h.check_contiguous(plan.events)
    dropped = plan_reset(
        state, history.events, reset.model_copy(update={"reapply_signals": False}), "new", T0
    )
    assert dropped.signals == [] and isinstance(dropped.events[-1], h.WorkflowExecutionReset)
    assert dropped.events[-1].reapplied_signals == 0


def test_a_reset_of_a_reset_run_keeps_the_first_runs_randomness() -> None:
    history, ids = _workflow()
    first = plan_reset(
        rebuild_state(history.events), history.events, m.ResetWorkflow(request_id="1", to=ids["a"]), "r1", T0
    )
    again = plan_reset(
        rebuild_state(first.events), first.events, m.ResetWorkflow(request_id="2", to=1), "r2", T0
    )
    started = again.events[0]
    assert isinstance(started, h.WorkflowExecutionStarted)
    assert (started.run_id, started.original_run_id) == ("r2", "old")


def test_reset_run_ids_follow_the_request_and_never_meet_a_starts() -> None:
    assert reset_run_id("ns", "wf", "r") == reset_run_id("ns", "wf", "r")
    assert reset_run_id("ns", "wf", "r") != reset_run_id("ns", "wf", "r2")
    assert reset_run_id("ns", "wf", "r") != reset_run_id("other", "wf", "r")
    assert reset_run_id("ns", "wf", "r") not in {
        fresh_run_id("ns", "wf", "r"),
        fresh_run_id("ns", "wf", "reset/r"),
    }


def _machine() -> ExecutionStateMachine:
    return ExecutionStateMachine(clock=lambda: T0 + timedelta(days=1), new_id=lambda: "unused")


def test_the_new_run_dispatches_pending_work_again_and_a_task_with_the_whole_history() -> None:
    history = History()
    _started(history)
    scheduled = _activity(history, 1)
    history.add(h.ActivityTaskStarted, scheduled_event_id=scheduled, attempt=1)
    timer = history.add(h.TimerStarted, seq=2, duration=timedelta(hours=1), fire_at=T0 + timedelta(hours=1))
    point = _signal(history, "a")
    _signal(history, "b")
    history.add(h.ActivityTaskCompleted, scheduled_event_id=scheduled, attempt=1)  # after the point: dropped
    state = rebuild_state(history.events)
    state.buffered = [m.SignalWorkflow(request_id="sig-waiting", signal_name="note")]
    reset = m.ResetWorkflow(request_id="r", to=point)
    done = _machine().reset(state, history.events, reset, "new")

    new = done.new_run
    assert [e.type for e in new.events][-1] == "workflow_execution_reset"
    assert new.state.run_id == "new" and new.state.status == "running"
    assert [b.request_id for b in new.state.buffered if isinstance(b, m.SignalWorkflow)] == [
        "sig-b",
        "sig-waiting",
    ]
    dispatched = [e for e in new.outbox if isinstance(e, o.DispatchActivity)]
    assert [(d.run_id, d.scheduled_event_id, d.attempt) for d in dispatched] == [("new", scheduled, 1)]
    timers = {e.timer_key for e in new.outbox if isinstance(e, o.CreateTimer)}
    assert f"new/timer/{timer}" in timers and not any(k.startswith("old/") for k in timers)
    task = next(e for e in new.outbox if isinstance(e, o.DispatchWorkflowTask))
    assert (task.run_id, task.first_event_id, task.last_event_id) == ("new", 1, point + 1)
    usage = [r for e in new.outbox if isinstance(e, o.RecordUsage) for r in e.records]
    assert [(r.metric, r.id) for r in usage] == [("reset", f"new/{point + 1}")]

    old = done.old_run
    assert [e.type for e in old.events] == ["workflow_execution_terminated"]
    assert old.state.status == "terminated" and old.state.new_run_id == "new"
    assert (old.state.reset_run_id, old.state.reset_point) == ("new", point)
    closed = next(e for e in old.outbox if isinstance(e, o.RunClosed))
    assert (closed.status, closed.new_run_id) == ("terminated", "new")


def test_a_closed_run_keeps_its_close_and_gains_the_pointer_only() -> None:
    history = History()
    _started(history)
    point = _signal(history, "a")
    history.add(h.WorkflowExecutionCompleted)
    state = rebuild_state(history.events)
    done = _machine().reset(state, history.events, m.ResetWorkflow(request_id="r", to=point), "new")
    assert done.old_run.events == [] and done.old_run.outbox == []
    assert (done.old_run.state.status, done.old_run.state.reset_run_id) == ("completed", "new")
    assert done.old_run.state.new_run_id is None


def test_a_parked_run_can_be_reset_to_before_its_failing_task() -> None:
    history, ids = _workflow()
    parked = History()
    parked.events = history.events[: ids["c"]]  # parked at "b"'s task, "c" waiting
    state = rebuild_state(parked.events)
    assert state.status == "blocked"
    done = _machine().reset(
        state, parked.events, m.ResetWorkflow(request_id="r", to="last-workflow-task"), "new"
    )
    assert done.point == ids["b"]
    assert done.new_run.state.status == "running" and done.new_run.state.workflow_task is not None
    assert [s.request_id for s in done.new_run.state.buffered if isinstance(s, m.SignalWorkflow)] == ["sig-c"]
    assert done.old_run.state.status == "terminated"


def test_a_refused_reset_changes_nothing() -> None:
    history, ids = _workflow()
    state = rebuild_state(history.events)
    before = state.model_copy(deep=True)
    with pytest.raises(ResetRefused):
        _machine().reset(state, history.events, m.ResetWorkflow(request_id="r", to=ids["failed"]), "new")
    assert state == before


def test_a_reset_message_handled_as_any_message_is_ignored() -> None:
    history, _ = _workflow()
    state = rebuild_state(history.events)
    assert _machine().handle(state, m.ResetWorkflow(request_id="r", to=1)).ignored is not None
