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
from perdure.platform.core.commands import RequestCancelChild
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
from perdure.platform.core.run_state import InFlightTask, RunLimits, rebuild_state
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
    # The prefix, the reset event, then the 4 signals after the point as new signal events.
    assert plan.point == point and len(plan.events) == point + 1 + 4
    assert plan.events[1:point] == history.events[1:point]
    started = plan.events[0]
    assert isinstance(started, h.WorkflowExecutionStarted)
    assert (started.run_id, started.original_run_id, started.timestamp) == (
        "new",
        "old",
        T0 + timedelta(seconds=1),
    )
    marker = plan.events[point]
    assert isinstance(marker, h.WorkflowExecutionReset) and marker is plan.marker
    assert (marker.event_id, marker.reset_from_run_id, marker.reset_point, marker.reason) == (
        point + 1,
        "old",
        point,
        "bad deploy",
    )
    assert (marker.reapplied_signals, marker.new_run_id) == (4, "new")
    assert plan.signals == plan.events[point + 1 :]
    assert [(s.event_id, s.request_id, s.reapplied_from_run_id) for s in plan.signals] == [
        (point + 2, "sig-b", "old"),
        (point + 3, "sig-c", "old"),
        (point + 4, "sig-d", "old"),
        (point + 5, "sig-e", "old"),
    ]
    assert {s.timestamp for s in plan.signals} == {T0 + timedelta(days=1)}
    h.check_contiguous(plan.events)
    assert plan.state == rebuild_state(plan.events)  # the state the new run's history implies
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
    assert [e.type for e in new.events][point:] == [
        "workflow_execution_reset",
        "workflow_execution_signaled",
        "workflow_execution_signaled",
    ]
    assert new.state.run_id == "new" and new.state.status == "running"
    # The carried signals are history (recorded after the reset event), nothing waits in the state.
    assert [e.request_id for e in new.events[point + 1 :] if isinstance(e, h.WorkflowExecutionSignaled)] == [
        "sig-b",
        "sig-waiting",
    ]
    assert new.state.buffered == []
    dispatched = [e for e in new.outbox if isinstance(e, o.DispatchActivity)]
    assert [(d.run_id, d.scheduled_event_id, d.attempt) for d in dispatched] == [("new", scheduled, 1)]
    timers = {e.timer_key for e in new.outbox if isinstance(e, o.CreateTimer)}
    assert f"new/timer/{timer}" in timers and not any(k.startswith("old/") for k in timers)
    task = next(e for e in new.outbox if isinstance(e, o.DispatchWorkflowTask))
    assert (task.run_id, task.first_event_id, task.last_event_id) == ("new", 1, point + 3)
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
    carried = [e for e in done.new_run.events if isinstance(e, h.WorkflowExecutionSignaled)]
    assert [e.request_id for e in carried if e.event_id > done.point] == ["sig-c"]
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


# -- the signals carried over: history of the new run, bounded as history ----------------------------


def _many_signals(count: int, text: str = "x") -> tuple[History, int]:
    history = History()
    _started(history)
    point = _signal(history, "first")
    for i in range(count):
        history.add(
            h.WorkflowExecutionSignaled,
            signal_name="note",
            input=default_converter.to_payloads([text]),
            request_id=f"s-{i}",
        )
    return history, point


def test_carried_signals_are_no_reset_points_of_the_new_run() -> None:
    """The new run's first workflow task gives the code the point's activation and the carried signals
    at once: its commands follow them all, so none of them is a point of its own (as a parked run's)."""
    history, point = _many_signals(3)
    done = _machine().reset(
        rebuild_state(history.events), history.events, m.ResetWorkflow(request_id="r", to=point), "new"
    )
    events = done.new_run.events
    assert [e.type for e in events[point + 1 :]] == ["workflow_execution_signaled"] * 3
    assert reset_points(events) == [1, point]
    with pytest.raises(ResetRefused, match="or a reset carried it over"):
        resolve_point(events, point + 2)
    # A signal after them (in a task of its own) is a point again.
    later = h.WorkflowExecutionSignaled(
        event_id=len(events) + 1, timestamp=T0 + timedelta(days=2), signal_name="note", request_id="later"
    )
    assert reset_points([*events, later]) == [1, point, later.event_id]


def test_a_signal_sent_again_under_its_request_id_is_carried_once() -> None:
    history, point = _many_signals(2)
    state = rebuild_state(history.events)
    state.buffered = [
        m.SignalWorkflow(request_id="s-1", signal_name="note"),  # a retry of one recorded after the point
        m.SignalWorkflow(request_id="w", signal_name="note"),
        m.SignalWorkflow(request_id="w", signal_name="note"),  # a retry waiting behind the first
        m.SignalWorkflow(request_id="sig-first", signal_name="note"),  # taken by the prefix already
    ]
    plan = plan_reset(state, history.events, m.ResetWorkflow(request_id="r", to=point), "new", T0)
    assert [s.request_id for s in plan.signals] == ["s-0", "s-1", "w"]
    assert plan.marker.reapplied_signals == 3


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        (
            RunLimits(max_events=50),
            r"would hold 53 events \(events 1 to 2 copied, the reset event and 50 signals",
        ),
        (
            RunLimits(max_bytes=20_000),
            r"and \d+ bytes or more: the namespace allows 51200 events and 20000 bytes",
        ),
    ],
)
def test_a_reset_whose_new_history_would_reach_the_limits_is_refused(limits: RunLimits, says: str) -> None:
    """The new run would be terminated for its history at once: the reset is refused instead, saying
    what to ask for (an earlier point, or no signals carried over), and nothing changes."""
    history, point = _many_signals(50, "y" * 300)
    state = rebuild_state(history.events)
    before = state.model_copy(deep=True)
    machine = ExecutionStateMachine(
        clock=lambda: T0 + timedelta(days=1), new_id=lambda: "unused", limits_of=lambda namespace: limits
    )
    reset = m.ResetWorkflow(request_id="r", to=point)
    with pytest.raises(ResetRefused, match=says) as refused:
        machine.reset(state, history.events, reset, "new")
    assert "reapply_signals=False" in str(refused.value) and state == before
    dropped = machine.reset(state, history.events, reset.model_copy(update={"reapply_signals": False}), "new")
    assert dropped.new_run.state.is_open and len(dropped.new_run.events) == point + 1


def test_a_reset_at_the_limits_edge_is_not_terminated_by_them() -> None:
    """Just under the limit: the new run is made, and not terminated for its history."""
    history, point = _many_signals(46)
    limits = RunLimits(max_events=50)
    machine = ExecutionStateMachine(
        clock=lambda: T0 + timedelta(days=1), new_id=lambda: "unused", limits_of=lambda namespace: limits
    )
    done = machine.reset(
        rebuild_state(history.events), history.events, m.ResetWorkflow(request_id="r", to=point), "new"
    )
    assert done.new_run.state.status == "running" and len(done.new_run.events) == 49


def test_a_reset_serializes_each_event_of_the_new_run_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reset reads the history once: the new run's events are measured (for the history limits)
    once each, not again when the transition checks its limits. (A 50k-event reset takes ~0.5 s to the
    last workflow task, ~0.9 s to the first: docs/reset.md.)"""
    history, point = _many_signals(300)
    state = rebuild_state(history.events)
    calls = 0
    dump = h.WorkflowExecutionSignaled.model_dump_json

    def counted(self: h.WorkflowExecutionSignaled, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        return dump(self, **kwargs)

    monkeypatch.setattr(h.WorkflowExecutionSignaled, "model_dump_json", counted)
    done = _machine().reset(state, history.events, m.ResetWorkflow(request_id="r", to=point), "new")
    assert len(done.new_run.events) == point + 1 + 300
    assert calls == 301  # the point's signal and the 300 carried over, once each


# -- a reset run's parent and children ---------------------------------------------------------------


def test_a_child_terminated_by_other_means_still_tells_its_parent() -> None:
    parent = h.ParentRef(namespace="ns", workflow_id="parent", run_id="p-run", initiated_event_id=5)
    history = History()
    history.add(
        h.WorkflowExecutionStarted,
        workflow_type="Flow",
        workflow_id="wf",
        run_id="old",
        namespace="ns",
        parent=parent,
    )
    state = rebuild_state(history.events)
    terminated = _machine().handle(state, m.TerminateWorkflowRequest(request_id="t"))
    told = [e.message.outcome for e in terminated.outbox if isinstance(e, o.NotifyParent)]
    assert told == ["terminated"]


def _parent_with_children() -> tuple[History, int, int]:
    """A parent with two children pending: "kid-a" started (run "kid-a-run"), "kid-b" not yet."""
    history = History()
    _started(history)
    started_a = history.add(
        h.StartChildWorkflowExecutionInitiated, seq=1, workflow_type="Kid", workflow_id="kid-a"
    )
    started_b = history.add(
        h.StartChildWorkflowExecutionInitiated, seq=2, workflow_type="Kid", workflow_id="kid-b"
    )
    history.add(h.ChildWorkflowExecutionStarted, initiated_event_id=started_a, run_id="kid-a-run")
    return history, started_a, started_b


def test_the_parent_close_policy_names_the_children_it_started() -> None:
    """A reset parent starts its child again under the same id: the old run's terminate must not reach
    the new child, whichever arrives first. It names the child's run it started (or, not started yet,
    the one its start makes)."""
    history, _, started_b = _parent_with_children()
    closed = _machine().handle(rebuild_state(history.events), m.TerminateWorkflowRequest(request_id="t"))
    cancels = [e for e in closed.outbox if isinstance(e, o.CancelRun)]
    assert [(c.workflow_id, c.terminate, c.first_run_id) for c in cancels] == [
        ("kid-a", True, "kid-a-run"),
        ("kid-b", True, fresh_run_id("ns", "kid-b", f"old/child/{started_b}")),
    ]
    request = cancels[0].request()
    assert isinstance(request, m.TerminateWorkflowRequest)
    assert (request.request_id, request.reason, request.first_run_id) == (
        cancels[0].request_id,
        "parent closed",
        "kid-a-run",
    )


def test_a_parents_terminate_reaches_the_runs_of_its_child_and_no_other() -> None:
    def child(run_id: str, first_run_id: str) -> Any:
        history = History()
        history.add(
            h.WorkflowExecutionStarted,
            workflow_type="Kid",
            workflow_id="kid-a",
            run_id=run_id,
            namespace="ns",
            first_run_id=first_run_id,
        )
        return rebuild_state(history.events)

    terminate = m.TerminateWorkflowRequest(request_id="t", reason="parent closed", first_run_id="kid-a-run")
    machine = _machine()
    assert machine.handle(child("kid-a-run", ""), terminate).state.status == "terminated"
    # The child continued as new (or was reset): the run that goes on from it is still the parent's.
    assert machine.handle(child("kid-a-next", "kid-a-run"), terminate).state.status == "terminated"
    # The child a reset parent started again under the same id (or anyone's later run): not touched.
    ignored = machine.handle(child("kid-a-again", ""), terminate)
    assert ignored.ignored is not None and "kid-a-run" in ignored.ignored
    cancel = m.CancelWorkflowRequest(request_id="c", first_run_id="kid-a-run")
    assert machine.handle(child("kid-a-again", ""), cancel).ignored is not None
    # A request without it (a client's, an operator's) reads and reaches the latest run as before.
    assert "first_run_id" not in m.TerminateWorkflowRequest(request_id="t").model_dump_json()
    assert machine.handle(
        child("kid-a-again", ""), terminate.model_copy(update={"first_run_id": None})
    ).changed


def test_a_code_cancelling_its_child_names_the_run_it_started() -> None:
    history, _, _ = _parent_with_children()
    state = rebuild_state(history.events)
    state.workflow_task = InFlightTask(
        task_id="old/task/1",
        sequence=1,
        sticky_queue=None,
        first_event_id=1,
        last_event_id=4,
        dispatched_at=T0,
    )
    done = _machine().handle(
        state,
        m.WorkflowTaskCompleted(
            run_id="old", task_id="old/task/1", commands=[RequestCancelChild(child_seq=1)]
        ),
    )
    cancels = [e for e in done.outbox if isinstance(e, o.CancelRun)]
    assert [(c.workflow_id, c.terminate, c.first_run_id) for c in cancels] == [("kid-a", False, "kid-a-run")]
