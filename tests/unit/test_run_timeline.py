"""A run's timeline as the console shows it, built from history events: attempts, timers, signals,
children, continue-as-new, what is pending and what the run waits on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from perdure.platform.console.run_timeline import (
    BAR_SCALE,
    MIN_BAR,
    Timeline,
    build_timeline,
    format_clock,
    format_duration,
    format_time,
    waits_on,
)
from perdure.platform.core import history as h
from perdure.platform.core.failures import Failure
from perdure.platform.core.payloads import default_converter

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class History:
    """A history written event by event, ids counted."""

    def __init__(self, workflow_type: str = "Order", **started: Any) -> None:
        self.events: list[h.HistoryEvent] = []
        self.add(
            h.WorkflowExecutionStarted,
            0,
            workflow_type=workflow_type,
            workflow_id="order-1",
            run_id="run-1",
            namespace="shop",
            input=default_converter.to_payloads(["cart-7"]),
            **started,
        )

    def add(self, kind: type[Any], seconds: float, **fields: Any) -> Any:
        event = kind(event_id=len(self.events) + 1, timestamp=at(seconds), **fields)
        self.events.append(event)
        return event

    def timeline(self, now: float) -> Timeline:
        return build_timeline(self.events, at(now))


def boom(attempt: int) -> Failure:
    return Failure(kind="application", message=f"card declined on attempt {attempt}", type="RuntimeError")


def retried_twice_then_completed(history: History) -> int:
    scheduled = history.add(h.ActivityTaskScheduled, 1, seq=1, activity_type="charge")
    sid: int = scheduled.event_id
    history.add(h.ActivityTaskStarted, 1.5, scheduled_event_id=sid, attempt=1)
    history.add(
        h.ActivityTaskRetryScheduled,
        2,
        scheduled_event_id=sid,
        failed_attempt=1,
        failure=boom(1),
        backoff=timedelta(seconds=1),
    )
    history.add(h.ActivityTaskStarted, 3, scheduled_event_id=sid, attempt=2)
    history.add(
        h.ActivityTaskRetryScheduled,
        4,
        scheduled_event_id=sid,
        failed_attempt=2,
        failure=boom(2),
        backoff=timedelta(seconds=2),
    )
    history.add(h.ActivityTaskStarted, 6, scheduled_event_id=sid, attempt=3)
    history.add(
        h.ActivityTaskCompleted,
        7,
        scheduled_event_id=sid,
        attempt=3,
        result=default_converter.to_payload("charged"),
    )
    return sid


def test_an_activity_retried_twice_then_completed_shows_its_three_attempts() -> None:
    history = History()
    sid = retried_twice_then_completed(history)
    history.add(h.WorkflowExecutionCompleted, 8, result=default_converter.to_payload("done"))

    timeline = history.timeline(now=100)

    [activity] = [i for i in timeline.items if i.kind == "activity"]
    assert (activity.event_id, activity.name, activity.outcome) == (sid, "charge", "completed")
    assert [(a.number, a.outcome) for a in activity.attempts] == [
        (1, "retried"),
        (2, "retried"),
        (3, "completed"),
    ]
    # Each attempt from its dispatch (scheduled, or the end of its backoff) to its outcome.
    assert [a.began for a in activity.attempts] == [at(1), at(3), at(6)]
    assert [a.duration(at(100)) for a in activity.attempts] == [timedelta(seconds=s) for s in (1, 1, 1)]
    assert activity.attempts[0].failure == boom(1)
    assert activity.duration(at(100)) == timedelta(seconds=6)
    assert activity.result is not None and default_converter.from_payload(activity.result) == "charged"
    assert activity.failure is None
    # One bar per attempt, laid out against the run's 8 seconds, in order and within the scale.
    assert [b.outcome for b in activity.bars] == ["retried", "retried", "completed"]
    assert [b.left for b in activity.bars] == [125, 375, 750]
    assert all(b.width == 125 for b in activity.bars)
    assert timeline.closed and not timeline.pending
    assert waits_on(timeline, "completed", at(100)) is None
    assert timeline.result is not None and default_converter.from_payload(timeline.result) == "done"


def test_an_activity_in_flight_is_pending_with_its_attempt() -> None:
    history = History()
    scheduled = history.add(h.ActivityTaskScheduled, 1, seq=1, activity_type="charge")
    history.add(h.ActivityTaskStarted, 1.5, scheduled_event_id=scheduled.event_id, attempt=1)
    history.add(
        h.ActivityTaskRetryScheduled,
        2,
        scheduled_event_id=scheduled.event_id,
        failed_attempt=1,
        failure=boom(1),
        backoff=timedelta(seconds=3),
    )

    # In its backoff: attempt 2 is due at 12:00:05.
    backoff = history.timeline(now=3)
    [pending] = backoff.pending.activities
    assert (pending.activity_type, pending.attempt, pending.phase) == ("charge", 2, "backoff")
    assert pending.retry_at == at(5)
    assert pending.last_failure == boom(1)
    assert waits_on(backoff, "running", at(3)) == "activity charge (attempt 2 at 12:00:05)"
    # The attempt that has not begun draws no bar yet.
    [activity] = [i for i in backoff.items if i.kind == "activity"]
    assert [b.outcome for b in activity.bars] == ["retried"]

    history.add(h.ActivityTaskStarted, 5, scheduled_event_id=scheduled.event_id, attempt=2)
    running = history.timeline(now=6)
    [pending] = running.pending.activities
    assert (pending.attempt, pending.phase, pending.since) == (2, "started", at(5))
    assert waits_on(running, "running", at(6)) == "activity charge (attempt 2)"
    [activity] = [i for i in running.items if i.kind == "activity"]
    assert (activity.outcome, activity.ended) == ("pending", None)
    assert activity.duration(at(6)) == timedelta(seconds=5)
    # The running attempt's bar reaches the end of the window (now).
    last = activity.bars[-1]
    assert (last.outcome, last.left + last.width) == ("running", BAR_SCALE)


def test_a_timer_fired_and_one_pending() -> None:
    history = History()
    first = history.add(h.TimerStarted, 1, seq=1, duration=timedelta(seconds=2), fire_at=at(3))
    history.add(h.TimerFired, 3, started_event_id=first.event_id)
    second = history.add(h.TimerStarted, 3, seq=2, duration=timedelta(minutes=5), fire_at=at(303))

    timeline = history.timeline(now=10)

    fired, waiting = [i for i in timeline.items if i.kind == "timer"]
    assert (fired.name, fired.outcome, fired.duration(at(10))) == ("2 s", "fired", timedelta(seconds=2))
    assert (waiting.name, waiting.outcome, waiting.due) == ("5 min", "pending", at(303))
    [pending] = timeline.pending.timers
    assert (pending.started_event_id, pending.fire_at) == (second.event_id, at(303))
    assert waits_on(timeline, "running", at(10)) == "timer until 12:05:03"


def test_a_signal_is_a_point_in_the_timeline_with_its_input() -> None:
    history = History()
    history.add(
        h.WorkflowExecutionSignaled, 2, signal_name="go", input=default_converter.to_payloads([{"ok": 1}])
    )

    timeline = history.timeline(now=4)

    [signal] = [i for i in timeline.items if i.kind == "signal"]
    assert (signal.name, signal.event_id, signal.is_span) == ("go", 2, False)
    assert default_converter.from_payloads(signal.input) == [{"ok": 1}]
    assert signal.duration(at(4)) is None
    # An instant still gets a visible tick, halfway along the run's four seconds.
    [tick] = signal.bars
    assert (tick.left, tick.width) == (500, MIN_BAR)
    assert waits_on(timeline, "running", at(4)) == "signal or condition"


def test_children_link_to_their_workflow_and_run() -> None:
    history = History()
    done = history.add(
        h.StartChildWorkflowExecutionInitiated, 1, seq=1, workflow_type="Sleeper", workflow_id="order-1-child"
    )
    history.add(h.ChildWorkflowExecutionStarted, 1.2, initiated_event_id=done.event_id, run_id="child-run")
    history.add(
        h.ChildWorkflowExecutionClosed,
        3,
        initiated_event_id=done.event_id,
        outcome="completed",
        result=default_converter.to_payload("woke"),
    )
    waiting = history.add(
        h.StartChildWorkflowExecutionInitiated, 4, seq=2, workflow_type="Sleeper", workflow_id="order-1-late"
    )

    timeline = history.timeline(now=5)

    first, second = [i for i in timeline.items if i.kind == "child"]
    assert (first.workflow_id, first.run_id, first.outcome) == ("order-1-child", "child-run", "completed")
    assert first.duration(at(5)) == timedelta(seconds=2)
    assert first.result is not None and default_converter.from_payload(first.result) == "woke"
    assert (second.workflow_id, second.run_id, second.outcome) == ("order-1-late", None, "pending")
    [pending] = timeline.pending.children
    assert (pending.initiated_event_id, pending.workflow_id) == (waiting.event_id, "order-1-late")
    assert waits_on(timeline, "running", at(5)) == "child order-1-late"


def test_continue_as_new_links_both_ways() -> None:
    history = History(continued_from_run_id="run-0", first_run_id="run-0")
    history.add(
        h.WorkflowExecutionContinuedAsNew,
        2,
        new_run_id="run-2",
        workflow_type="Order",
        input=default_converter.to_payloads([3]),
    )

    timeline = history.timeline(now=50)

    assert (timeline.previous_run_id, timeline.next_run_id) == ("run-0", "run-2")
    assert timeline.closed and timeline.window_end == at(2)  # a closed run's bars end at its close
    [moved] = [i for i in timeline.items if i.kind == "continued_as_new"]
    assert (moved.run_id, moved.outcome) == ("run-2", "continued_as_new")
    [started] = [i for i in timeline.items if i.kind == "started"]
    assert started.detail == "continued from run run-0"
    assert default_converter.from_payloads(timeline.input) == ["cart-7"]


def test_waits_on_names_everything_pending_at_once() -> None:
    history = History()
    history.add(h.ActivityTaskScheduled, 1, seq=1, activity_type="ship")
    history.add(h.TimerStarted, 1, seq=2, duration=timedelta(seconds=4), fire_at=at(5))

    timeline = history.timeline(now=2)

    assert waits_on(timeline, "running", at(2)) == "activity ship (attempt 1), timer until 12:00:05"
    blocked = waits_on(timeline, "blocked", at(2), "non-determinism at event 3")
    assert blocked is not None and "workflow task failed (non-determinism at event 3)" in blocked


def test_a_close_settles_what_was_pending() -> None:
    history = History()
    history.add(h.ActivityTaskScheduled, 1, seq=1, activity_type="ship")
    history.add(h.TimerStarted, 1, seq=2, duration=timedelta(seconds=30), fire_at=at(31))
    history.add(h.WorkflowExecutionTerminated, 4, reason="operator: stuck")

    timeline = history.timeline(now=60)

    assert not timeline.pending
    spans = [i for i in timeline.items if i.is_span]
    assert [(i.kind, i.outcome, i.ended) for i in spans] == [
        ("activity", "canceled", at(4)),
        ("timer", "canceled", at(4)),
    ]
    assert timeline.close_detail == "operator: stuck"
    [closed] = [i for i in timeline.items if i.kind == "closed"]
    assert (closed.name, closed.outcome) == ("terminated", "terminated")


def test_markers_search_attributes_and_workflow_task_failures_are_shown() -> None:
    history = History()
    history.add(h.UpsertWorkflowSearchAttributes, 1, seq=1, attributes={"Tag": "t-1", "Count": 2})
    history.add(
        h.MarkerRecorded,
        1,
        seq=2,
        marker="side_effect",
        marker_id="",
        value=default_converter.to_payload(7),
    )
    history.add(
        h.WorkflowTaskFailed, 2, cause="nondeterminism", message="history has a timer", stack_trace="trace"
    )
    history.add(h.WorkflowTaskRedriven, 3)
    history.add(h.WorkflowExecutionCancelRequested, 4, reason="no longer needed")

    timeline = history.timeline(now=5)

    kinds = [(i.kind, i.name) for i in timeline.items]
    assert kinds == [
        ("started", "Order"),
        ("search_attributes", "Tag, Count"),
        ("marker", "side effect"),
        ("workflow_task_failed", "nondeterminism"),
        ("workflow_task_redriven", "redriven"),
        ("cancel_requested", "cancel requested"),
    ]
    failed = timeline.items[3]
    assert failed.failure is not None and failed.failure.message == "history has a timer"
    assert failed.failure.stack_trace == "trace"
    assert timeline.items[1].attributes == {"Tag": "t-1", "Count": 2}
    assert timeline.cancel_requested


def test_an_activity_cancelled_in_its_backoff_drops_the_attempt_that_never_ran() -> None:
    history = History()
    scheduled = history.add(h.ActivityTaskScheduled, 1, seq=1, activity_type="charge")
    history.add(
        h.ActivityTaskRetryScheduled,
        2,
        scheduled_event_id=scheduled.event_id,
        failed_attempt=1,
        failure=boom(1),
        backoff=timedelta(seconds=10),
    )
    history.add(h.ActivityTaskCancelRequested, 3, seq=2, scheduled_event_id=scheduled.event_id)

    [activity] = [i for i in history.timeline(now=4).items if i.kind == "activity"]

    assert (activity.outcome, activity.ended) == ("canceled", at(3))
    assert [(a.number, a.outcome) for a in activity.attempts] == [(1, "retried")]


def test_activities_that_failed_or_timed_out_for_good_keep_their_failure() -> None:
    history = History()
    failed = history.add(h.ActivityTaskScheduled, 1, seq=1, activity_type="charge")
    history.add(h.ActivityTaskStarted, 1, scheduled_event_id=failed.event_id, attempt=1)
    history.add(h.ActivityTaskFailed, 2, scheduled_event_id=failed.event_id, attempt=1, failure=boom(1))
    slow = history.add(h.ActivityTaskScheduled, 2, seq=2, activity_type="ship")
    history.add(
        h.ActivityTaskTimedOut,
        5,
        scheduled_event_id=slow.event_id,
        attempt=1,
        timeout_type="schedule_to_start",
    )

    charge, ship = [i for i in history.timeline(now=6).items if i.kind == "activity"]

    assert (charge.outcome, charge.failure, charge.duration(at(6))) == (
        "failed",
        boom(1),
        timedelta(seconds=1),
    )
    assert [(a.number, a.outcome) for a in charge.attempts] == [(1, "failed")]
    assert (ship.outcome, ship.detail, ship.ended) == ("timed_out", "schedule-to-start timeout", at(5))
    assert [(a.outcome, a.started) for a in ship.attempts] == [("timed_out", None)]


def test_an_empty_history_builds_an_empty_timeline() -> None:
    timeline = build_timeline([], T0)
    assert timeline.items == [] and not timeline.pending
    assert waits_on(timeline, "running", T0) == "signal or condition"


def test_durations_and_times_read_as_people_write_them() -> None:
    assert [
        format_duration(timedelta(seconds=s)) for s in (0.25, 2.5, 42, 185, 3600 * 2 + 600, 86400 * 3 + 3600)
    ] == ["250 ms", "2.5 s", "42 s", "3 min 5 s", "2 h 10 min", "3 d 1 h"]
    assert format_duration(None) == ""
    assert format_time(at(1.5)) == "2026-12-01 12:00:01.500"
    assert format_clock(at(5), at(0)) == "12:00:05"
    assert format_clock(at(86400), at(0)) == "2026-12-02 12:00:00"
