"""The execution state machine as pure code: messages in, events and outbox entries out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.payloads import default_converter
from perdure.platform.core.state_machine import ExecutionStateMachine, Transition

from . import workflows as w


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _machine(clock: Clock) -> ExecutionStateMachine:
    ids = iter(range(1000))
    return ExecutionStateMachine(w.app, clock=clock, new_id=lambda: f"run-{next(ids)}")


def _start(machine: ExecutionStateMachine, workflow_type: str, *args: object) -> Transition:
    return machine.start(
        "ns",
        m.StartWorkflow(
            request_id="req",
            workflow_type=workflow_type,
            workflow_id="wf",
            input=default_converter.to_payloads(list(args)),
        ),
    )


def test_start_schedules_the_first_activity_through_the_outbox() -> None:
    machine = _machine(Clock())
    started = _start(machine, "ThreeSteps", "s")
    assert [e.event_id for e in started.events] == [1, 2]
    assert isinstance(started.events[1], h.ActivityTaskScheduled)
    dispatch = [e for e in started.outbox if isinstance(e, o.DispatchActivity)]
    assert len(dispatch) == 1 and dispatch[0].attempt == 1 and dispatch[0].scheduled_event_id == 2
    assert any(isinstance(e, o.CreateTimer) and e.notice.purpose == "start_to_close" for e in started.outbox)
    assert started.state.next_event_id == 3


def test_a_redelivered_or_stale_result_changes_nothing() -> None:
    machine = _machine(Clock())
    started = _start(machine, "ThreeSteps", "s")
    result = m.ActivityCompleted(
        run_id=started.state.run_id,
        scheduled_event_id=2,
        attempt=1,
        result=default_converter.to_payload("s-1-done"),
    )
    first = machine.handle(started.state, result, instance=started.instance)
    assert first.changed and isinstance(first.events[-1], h.ActivityTaskScheduled)
    again = machine.handle(first.state, result, instance=first.instance)
    assert again.ignored is not None and not again.events and not again.outbox
    other_run = machine.handle(
        first.state, result.model_copy(update={"run_id": "someone-else"}), instance=first.instance
    )
    assert other_run.ignored is not None


def test_a_live_instance_is_fed_only_the_new_events() -> None:
    machine = _machine(Clock())
    transition = _start(machine, "ThreeSteps", "s")
    instance = transition.instance
    assert instance is not None
    applied = instance.events_applied
    for scheduled in (2, 6):
        transition = machine.handle(
            transition.state,
            m.ActivityCompleted(
                run_id=transition.state.run_id,
                scheduled_event_id=scheduled,
                attempt=1,
                result=default_converter.to_payload("x"),
            ),
            instance=instance,
        )
        assert transition.instance is instance
        # Only this message's activation and command events reach the code (informational ones need not).
        relevant = [e for e in transition.events if isinstance(e, h.ACTIVATION_EVENTS + h.COMMAND_EVENTS)]
        assert instance.events_applied == applied + len(relevant)
        applied = instance.events_applied


def test_without_a_cached_instance_the_history_is_replayed() -> None:
    machine = _machine(Clock())
    started = _start(machine, "ThreeSteps", "s")
    result = m.ActivityCompleted(
        run_id=started.state.run_id,
        scheduled_event_id=2,
        attempt=1,
        result=default_converter.to_payload("s-1-done"),
    )
    cached = machine.handle(started.state, result, instance=started.instance)
    cold = machine.handle(started.state, result, history=started.events)
    assert [e.model_dump() for e in cold.events] == [e.model_dump() for e in cached.events]
    assert cold.outbox == cached.outbox


def test_timeouts_and_retries_are_durable_timers() -> None:
    clock = Clock()
    machine = _machine(clock)
    started = _start(machine, "StartToClose", "t")
    timer = next(
        e for e in started.outbox if isinstance(e, o.CreateTimer) and e.notice.purpose == "start_to_close"
    )
    assert timer.fire_at == clock.now + timedelta(seconds=0.2)
    clock.now = timer.fire_at
    timed_out = machine.handle(started.state, timer.notice, instance=started.instance)
    retry = next(e for e in timed_out.outbox if isinstance(e, o.CreateTimer))
    assert retry.notice.purpose == "activity_retry" and retry.notice.attempt == 2
    assert retry.fire_at == clock.now + timedelta(seconds=1)
    assert not any(isinstance(e, o.DispatchActivity) for e in timed_out.outbox)
    clock.now = retry.fire_at
    redispatched = machine.handle(timed_out.state, retry.notice, instance=timed_out.instance)
    dispatch = [e for e in redispatched.outbox if isinstance(e, o.DispatchActivity)]
    assert [d.attempt for d in dispatch] == [2]
    # The first attempt's late result no longer counts.
    late = m.ActivityCompleted(run_id=started.state.run_id, scheduled_event_id=2, attempt=1)
    assert machine.handle(redispatched.state, late, instance=redispatched.instance).ignored is not None


def test_rebuilt_state_matches_the_live_state() -> None:
    from perdure.platform.core.run_state import rebuild_state

    clock = Clock()
    machine = _machine(clock)
    transition = _start(machine, "SignalsAndTimers")
    history = list(transition.events)
    transition = machine.handle(
        transition.state,
        m.SignalWorkflow(request_id="s1", signal_name="note", input=default_converter.to_payloads(["hi"])),
        instance=transition.instance,
    )
    history += transition.events
    rebuilt = rebuild_state(history)
    live = transition.state
    assert rebuilt.next_event_id == live.next_event_id
    assert rebuilt.pending_timers == live.pending_timers
    assert rebuilt.armed_timers == live.armed_timers
    assert rebuilt.recent_request_ids == live.recent_request_ids
