"""The execution state machine: (run state, message) -> new events, outbox entries and the next state.

Pure: the clock and the id source are injected, nothing here does I/O. The caller persists the events
and the state in one conditional write, then sends the outbox, then acknowledges the message.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.commands import (
    CancelTimer,
    CancelWorkflow,
    Command,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordMarker,
    RequestCancelActivity,
    RequestCancelChild,
    ScheduleActivity,
    StartChildWorkflow,
    StartTimer,
    UpsertSearchAttributes,
)
from perdure.platform.core.definitions import UnknownWorkflowTypeError, WorkflowRegistry
from perdure.platform.core.failures import (
    ApplicationError,
    Failure,
    NonDeterminismError,
    NondeterministicCallError,
    TimeoutType,
)
from perdure.platform.core.payloads import DataConverter, Payload, default_converter
from perdure.platform.core.retry import DEFAULT_ACTIVITY_RETRY
from perdure.platform.core.run_state import (
    PendingActivity,
    RunState,
    apply_event,
    arm,
    attempt_timers,
    disarm_activity,
    new_run_state,
    rebuild_state,
)
from perdure.platform.core.usage import (
    UNBILLED_WORKFLOW_TYPES,
    UsageRecord,
    heartbeat_usage,
    usage_of_events,
)
from perdure.platform.core.workflow_instance import WorkflowInstance, WorkflowTaskError

ChildOutcome = Literal["completed", "failed", "canceled", "terminated", "timed_out"]
CHILD_OUTCOMES: dict[str, ChildOutcome] = {
    "completed": "completed",
    "failed": "failed",
    "canceled": "canceled",
    "terminated": "terminated",
    "timed_out": "timed_out",
}


@dataclass
class Transition:
    state: RunState
    events: list[h.HistoryEvent] = field(default_factory=list)
    outbox: list[o.OutboxEntry] = field(default_factory=list)
    # The live instance to keep for the next message; None when the run closed or is parked.
    instance: WorkflowInstance | None = None
    # Set when the message changed nothing, with the reason (duplicate, stale, closed run, ...).
    ignored: str | None = None

    @property
    def changed(self) -> bool:
        return self.ignored is None


class _Step:
    """Accumulates one transition: events with contiguous ids, outbox entries, state changes.

    Every event changes the state through ``apply_event`` (as a rebuild from history does), and every
    change of the armed timers becomes a create or cancel entry in the outbox.
    """

    def __init__(self, state: RunState, now: datetime) -> None:
        self.state = state
        self.now = now
        self.events: list[h.HistoryEvent] = []
        self.outbox: list[o.OutboxEntry] = []
        # Billable actions that are not events (heartbeats that reached the run).
        self.usage: list[UsageRecord] = []
        # The live instance (None until needed, or once the run is parked) and the history to replay.
        self.instance: WorkflowInstance | None = None
        self.history: Sequence[h.HistoryEvent] | None = None

    def append(self, event_type: type[Any], **fields: Any) -> Any:
        event = event_type(event_id=self.state.next_event_id, timestamp=self.now, **fields)
        self.events.append(event)
        self.change(lambda: apply_event(self.state, event))
        return event

    def change(self, mutate: Callable[[], object]) -> None:
        before = dict(self.state.armed_timers)
        mutate()
        after = self.state.armed_timers
        for key, timer in after.items():
            if before.get(key) is not timer:
                self.outbox.append(o.CreateTimer(timer_key=key, fire_at=timer.fire_at, notice=timer.notice))
        self.outbox.extend(o.CancelTimerEntry(timer_key=key) for key in before.keys() - after.keys())

    def arm(self, purpose: m.TimerPurpose, fire_at: datetime, event_id: int = 0, attempt: int = 0) -> None:
        self.change(lambda: arm(self.state, purpose, fire_at, event_id, attempt))

    def announce_armed(self) -> None:
        """Create every armed timer again (for a new run, or a run restored from its history)."""
        self.outbox.extend(
            o.CreateTimer(timer_key=key, fire_at=timer.fire_at, notice=timer.notice)
            for key, timer in self.state.armed_timers.items()
        )


class ExecutionStateMachine:
    def __init__(
        self,
        registry: WorkflowRegistry,
        *,
        clock: Callable[[], datetime],
        new_id: Callable[[], str],
        converter: DataConverter = default_converter,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.new_id = new_id
        self.converter = converter

    # -- entry points -------------------------------------------------------------------------------
    def start(self, namespace: str, message: m.StartWorkflow, run_id: str | None = None) -> Transition:
        now = self.clock()
        run_id = run_id or self.new_id()
        started = h.WorkflowExecutionStarted(
            event_id=1,
            timestamp=now,
            workflow_type=message.workflow_type,
            workflow_id=message.workflow_id,
            run_id=run_id,
            namespace=namespace,
            input=message.input,
            request_id=message.request_id,
            execution_timeout=message.execution_timeout,
            first_run_id=message.first_run_id or run_id,
            continued_from_run_id=message.continued_from_run_id,
            parent=message.parent,
        )
        step = _Step(new_run_state(started), now)
        step.events.append(started)
        step.announce_armed()
        instance: WorkflowInstance | None = None
        try:
            instance = WorkflowInstance(
                self.registry.get_workflow(message.workflow_type), started, self.converter
            )
        except UnknownWorkflowTypeError as exc:
            self._park(step, "unknown_workflow_type", str(exc), "")
        else:
            instance = self._activate(step, instance, started)
        if message.signal_name is not None:
            signaled = step.append(
                h.WorkflowExecutionSignaled,
                signal_name=message.signal_name,
                input=message.signal_input,
                request_id=message.request_id,
            )
            if instance is not None and step.state.status == "running":
                instance = self._activate(step, instance, signaled)
        return self._done(step, instance)

    def handle(
        self,
        state: RunState,
        message: m.RunMessage,
        instance: WorkflowInstance | None = None,
        history: Sequence[h.HistoryEvent] | None = None,
    ) -> Transition:
        """Apply ``message`` to the run. ``instance`` is the cached live instance if any; without one,
        ``history`` (the run's whole history) is replayed when the code has to run."""
        if isinstance(message, m.StartWorkflow):
            return Transition(state, ignored=f"workflow {state.workflow_id!r} already has run {state.run_id}")
        if isinstance(message, m.QueryWorkflow):
            return Transition(state, instance=instance, ignored="a query changes nothing (see query())")
        if not state.is_open:
            return Transition(state, ignored=f"run {state.run_id} is closed ({state.status})")
        step = _Step(state.model_copy(deep=True), self.clock())
        step.instance, step.history = instance, history
        handler = getattr(self, f"_on_{message.kind}")
        ignored: str | None = handler(step, message)
        if ignored is not None:
            return Transition(state, instance=instance, ignored=ignored)
        return self._done(step, step.instance)

    def query(
        self,
        message: m.QueryWorkflow,
        instance: WorkflowInstance | None = None,
        history: Sequence[h.HistoryEvent] | None = None,
    ) -> Payload:
        """Answer ``message`` from the live instance, or from ``history`` replayed (a closed or parked
        run, a cache miss). Raises ``ApplicationError`` for an unknown query or a handler that fails,
        ``NonDeterminismError`` if the history no longer replays."""
        if instance is None:
            if not history:
                raise ApplicationError("the run has no history to answer from", type="QueryNotReady")
            instance = self.replay(history)
        return instance.query(message.query_name, message.input)

    def recover(self, history: Sequence[h.HistoryEvent]) -> Transition:
        """Continue a run from its history alone (as after losing everything but the history): rebuild
        the state, re-dispatch pending activity attempts, re-arm every timer, and record the commands the
        code issues past the end of the history."""
        state = rebuild_state(history)
        step = _Step(state, self.clock())
        redispatched = [a for a in state.pending_activities.values() if a.phase != "backoff"]
        for activity in redispatched:
            disarm_activity(state, activity.scheduled_event_id, include_schedule_to_close=False)
            activity.phase, activity.started_at, activity.attempt_dispatched_at = "scheduled", None, step.now
            attempt_timers(state, activity, step.now)
        step.announce_armed()
        for activity in redispatched:
            self._dispatch(step, activity)
        step.instance, step.history = None, history
        if state.status == "running":
            self._run_code(step, None)
        return self._done(step, step.instance)

    # -- message handlers (return a reason when the message changes nothing) -------------------------
    def _on_signal(self, step: _Step, message: m.SignalWorkflow) -> str | None:
        if message.request_id and message.request_id in step.state.recent_request_ids:
            return f"duplicate signal request {message.request_id}"
        event = step.append(
            h.WorkflowExecutionSignaled,
            signal_name=message.signal_name,
            input=message.input,
            request_id=message.request_id,
        )
        self._run_code(step, event)
        return None

    def _on_cancel(self, step: _Step, message: m.CancelWorkflowRequest) -> str | None:
        if step.state.cancel_requested:
            return "cancellation already requested"
        event = step.append(
            h.WorkflowExecutionCancelRequested, reason=message.reason, request_id=message.request_id
        )
        self._run_code(step, event)
        return None

    def _on_terminate(self, step: _Step, message: m.TerminateWorkflowRequest) -> str | None:
        self._close(step, h.WorkflowExecutionTerminated, reason=message.reason)
        return None

    def _on_redrive(self, step: _Step, message: m.RedriveRun) -> str | None:
        if step.state.status != "blocked":
            return "run is not blocked"
        step.append(h.WorkflowTaskRedriven, request_id=message.request_id)
        step.instance = None  # always replay from the stored history: the code may have changed
        self._run_code(step, None)
        return None

    def _current_attempt(
        self, step: _Step, scheduled_event_id: int, attempt: int, run_id: str
    ) -> PendingActivity | None:
        if run_id != step.state.run_id:
            return None
        activity = step.state.pending_activities.get(scheduled_event_id)
        if activity is None or activity.attempt != attempt or activity.phase == "backoff":
            return None
        return activity

    def _record_started(self, step: _Step, activity: PendingActivity, identity: str = "") -> None:
        step.append(
            h.ActivityTaskStarted,
            scheduled_event_id=activity.scheduled_event_id,
            attempt=activity.attempt,
            identity=identity,
        )

    def _on_activity_started(self, step: _Step, message: m.ActivityStarted) -> str | None:
        activity = self._current_attempt(step, message.scheduled_event_id, message.attempt, message.run_id)
        if activity is None or activity.phase != "scheduled":
            return "stale or repeated activity start"
        self._record_started(step, activity, message.identity)
        return None

    def _on_activity_heartbeat(self, step: _Step, message: m.ActivityHeartbeat) -> str | None:
        activity = self._current_attempt(step, message.scheduled_event_id, message.attempt, message.run_id)
        if activity is None:
            return "heartbeat of a stale attempt"
        if activity.phase == "scheduled":
            self._record_started(step, activity)
        activity.last_heartbeat_at = step.now
        activity.heartbeat_details = message.details
        step.usage.append(
            heartbeat_usage(
                step.state.namespace,
                step.state.run_id,
                message.scheduled_event_id,
                message.attempt,
                message.sequence,
                step.now,
            )
        )
        return None

    def _on_activity_completed(self, step: _Step, message: m.ActivityCompleted) -> str | None:
        activity = self._current_attempt(step, message.scheduled_event_id, message.attempt, message.run_id)
        if activity is None:
            return "result of a stale attempt or a finished activity"
        if activity.phase == "scheduled":
            self._record_started(step, activity)
        event = step.append(
            h.ActivityTaskCompleted,
            scheduled_event_id=activity.scheduled_event_id,
            attempt=activity.attempt,
            result=message.result,
        )
        self._run_code(step, event)
        return None

    def _on_activity_failed(self, step: _Step, message: m.ActivityFailed) -> str | None:
        activity = self._current_attempt(step, message.scheduled_event_id, message.attempt, message.run_id)
        if activity is None:
            return "failure of a stale attempt or a finished activity"
        if activity.phase == "scheduled":
            self._record_started(step, activity)
        self._attempt_failed(step, activity, message.failure, timeout_type=None)
        return None

    def _on_timer_fired(self, step: _Step, notice: m.TimerFiredNotice) -> str | None:
        state = step.state
        armed = state.armed_timers.get(notice.timer_key)
        if notice.run_id != state.run_id or armed is None:
            return "timer no longer armed"
        if armed.fire_at > step.now:
            return "timer was armed again for later"  # a late notice of the key's previous arming
        del state.armed_timers[notice.timer_key]  # it fired: there is nothing left to cancel
        if notice.purpose == "user_timer":
            self._run_code(step, step.append(h.TimerFired, started_event_id=notice.event_id))
            return None
        if notice.purpose == "execution_timeout":
            self._close(step, h.WorkflowExecutionTimedOut)
            return None
        activity = state.pending_activities.get(notice.event_id)
        if activity is None:
            return "timer of a finished activity"
        if notice.purpose == "schedule_to_close":
            self._time_out(step, activity, "schedule_to_close")
        elif notice.attempt != activity.attempt:
            return "timer of an earlier attempt"
        elif notice.purpose == "activity_retry":
            activity.phase, activity.started_at, activity.attempt_dispatched_at = "scheduled", None, step.now
            step.change(lambda: attempt_timers(state, activity, step.now))
            self._dispatch(step, activity)
        elif notice.purpose == "schedule_to_start":
            self._time_out(step, activity, "schedule_to_start")
        elif notice.purpose == "start_to_close":
            timeout = activity.options.start_to_close_timeout or timedelta(0)
            if activity.started_at is not None and activity.started_at + timeout > step.now:
                step.arm(
                    "start_to_close",
                    activity.started_at + timeout,
                    activity.scheduled_event_id,
                    activity.attempt,
                )
            else:
                self._attempt_failed(step, activity, None, timeout_type="start_to_close")
        elif notice.purpose == "heartbeat":
            timeout = activity.options.heartbeat_timeout or timedelta(0)
            last_sign = activity.last_heartbeat_at or activity.started_at or activity.attempt_dispatched_at
            if last_sign + timeout > step.now:
                step.arm("heartbeat", last_sign + timeout, activity.scheduled_event_id, activity.attempt)
            else:
                self._attempt_failed(step, activity, None, timeout_type="heartbeat")
        return None

    def _on_child_started(self, step: _Step, message: m.ChildStarted) -> str | None:
        child = step.state.pending_children.get(message.initiated_event_id)
        if message.run_id != step.state.run_id or child is None or child.run_id is not None:
            return "stale child start"
        step.append(
            h.ChildWorkflowExecutionStarted,
            initiated_event_id=child.initiated_event_id,
            run_id=message.child_run_id,
        )
        return None

    def _on_child_start_failed(self, step: _Step, message: m.ChildStartFailed) -> str | None:
        if (
            message.run_id != step.state.run_id
            or message.initiated_event_id not in step.state.pending_children
        ):
            return "stale child start failure"
        event = step.append(
            h.StartChildWorkflowExecutionFailed,
            initiated_event_id=message.initiated_event_id,
            cause=message.cause,
        )
        self._run_code(step, event)
        return None

    def _on_child_closed(self, step: _Step, message: m.ChildClosed) -> str | None:
        if (
            message.run_id != step.state.run_id
            or message.initiated_event_id not in step.state.pending_children
        ):
            return "stale child close"
        event = step.append(
            h.ChildWorkflowExecutionClosed,
            initiated_event_id=message.initiated_event_id,
            outcome=message.outcome,
            result=message.result,
            failure=message.failure,
        )
        self._run_code(step, event)
        return None

    # -- activities ----------------------------------------------------------------------------------
    def _dispatch(self, step: _Step, activity: PendingActivity) -> None:
        state = step.state
        step.outbox.append(
            o.DispatchActivity(
                namespace=state.namespace,
                workflow_id=state.workflow_id,
                workflow_type=state.workflow_type,
                run_id=state.run_id,
                scheduled_event_id=activity.scheduled_event_id,
                attempt=activity.attempt,
                activity_type=activity.activity_type,
                input=activity.input,
                options=activity.options,
                scheduled_time=activity.scheduled_time,
                heartbeat_details=activity.heartbeat_details,
            )
        )

    def _attempt_failed(
        self,
        step: _Step,
        activity: PendingActivity,
        failure: Failure | None,
        timeout_type: TimeoutType | None,
    ) -> None:
        if failure is None:
            failure = Failure(
                kind="timeout",
                message=f"activity attempt timed out ({timeout_type})",
                type="TimeoutFailure",
                timeout_type=timeout_type,
            )
        policy = activity.options.retry_policy or DEFAULT_ACTIVITY_RETRY
        retry = policy.should_retry(activity.attempt, failure.type, failure.non_retryable)
        backoff = policy.backoff(activity.attempt)
        deadline = (
            activity.scheduled_time + activity.options.schedule_to_close_timeout
            if activity.options.schedule_to_close_timeout is not None
            else None
        )
        if retry and (deadline is None or step.now + backoff < deadline):
            step.append(
                h.ActivityTaskRetryScheduled,
                scheduled_event_id=activity.scheduled_event_id,
                failed_attempt=activity.attempt,
                failure=failure,
                backoff=backoff,
            )
        elif timeout_type is not None:
            self._time_out(step, activity, timeout_type)
        else:
            event = step.append(
                h.ActivityTaskFailed,
                scheduled_event_id=activity.scheduled_event_id,
                attempt=activity.attempt,
                failure=failure,
            )
            self._run_code(step, event)

    def _time_out(self, step: _Step, activity: PendingActivity, timeout_type: TimeoutType) -> None:
        event = step.append(
            h.ActivityTaskTimedOut,
            scheduled_event_id=activity.scheduled_event_id,
            attempt=activity.attempt,
            timeout_type=timeout_type,
            last_failure=activity.last_failure,
        )
        self._run_code(step, event)

    # -- running the code ------------------------------------------------------------------------------
    def _run_code(self, step: _Step, event: h.HistoryEvent | None) -> None:
        """Feed an activation event to the code (replaying first on a cache miss) and record its commands."""
        if step.state.status != "running":
            return  # parked: the event is recorded; the code sees it when the run is redriven
        instance = step.instance
        if instance is None:
            if step.history is None:
                raise ValueError("no live instance and no history to replay: pass one of them")
            try:
                instance = self.replay(step.history)
            except (NonDeterminismError, WorkflowTaskError, UnknownWorkflowTypeError) as exc:
                self._park_for(step, exc)
                step.instance = None
                return
        if event is not None:
            instance = self._activate(step, instance, event)
        else:
            instance = self._record_pending(step, instance)
        step.instance = instance

    def replay(self, history: Sequence[h.HistoryEvent]) -> WorkflowInstance:
        started = history[0]
        if not isinstance(started, h.WorkflowExecutionStarted):
            raise ValueError("a history starts with workflow_execution_started")
        instance = WorkflowInstance(
            self.registry.get_workflow(started.workflow_type), started, self.converter
        )
        instance.apply(history)
        return instance

    def _activate(
        self, step: _Step, instance: WorkflowInstance, event: h.HistoryEvent
    ) -> WorkflowInstance | None:
        try:
            instance.apply([event])
        except (NonDeterminismError, WorkflowTaskError) as exc:
            self._park_for(step, exc)
            return None
        return self._record_pending(step, instance)

    def _record_pending(self, step: _Step, instance: WorkflowInstance) -> WorkflowInstance | None:
        commands = instance.apply([])
        first = len(step.events)
        for command in commands:
            self._record(step, command)
        try:
            instance.apply(step.events[first:])
        except (NonDeterminismError, WorkflowTaskError) as exc:
            self._park_for(step, exc)
            return None
        if not step.state.is_open:
            return None
        return instance

    def _record(self, step: _Step, command: Command) -> None:
        state = step.state
        match command:
            case ScheduleActivity():
                event = step.append(
                    h.ActivityTaskScheduled,
                    seq=command.seq,
                    activity_type=command.activity_type,
                    input=command.input,
                    options=command.options,
                )
                self._dispatch(step, state.pending_activities[event.event_id])
            case RequestCancelActivity():
                scheduled = state.seq_to_event.get(command.activity_seq, 0)
                pending = scheduled in state.pending_activities
                step.append(
                    h.ActivityTaskCancelRequested, seq=command.activity_seq, scheduled_event_id=scheduled
                )
                if pending:
                    step.outbox.append(
                        o.CancelActivityTask(run_id=state.run_id, scheduled_event_id=scheduled)
                    )
                    # Cancellation is "try cancel": the code already moved on, so it is settled at once.
                    step.append(h.ActivityTaskCanceled, scheduled_event_id=scheduled)
            case StartTimer():
                step.append(
                    h.TimerStarted,
                    seq=command.seq,
                    duration=command.duration,
                    fire_at=step.now + command.duration,
                )
            case CancelTimer():
                started_id = state.seq_to_event.get(command.timer_seq, 0)
                step.append(h.TimerCanceled, seq=command.timer_seq, started_event_id=started_id)
            case RecordMarker():
                step.append(
                    h.MarkerRecorded,
                    seq=command.seq,
                    marker=command.marker,
                    marker_id=command.marker_id,
                    value=command.value,
                )
            case UpsertSearchAttributes():
                step.append(h.UpsertWorkflowSearchAttributes, seq=command.seq, attributes=command.attributes)
            case StartChildWorkflow():
                event = step.append(
                    h.StartChildWorkflowExecutionInitiated,
                    seq=command.seq,
                    workflow_type=command.workflow_type,
                    workflow_id=command.workflow_id,
                    input=command.input,
                    execution_timeout=command.execution_timeout,
                )
                parent = h.ParentRef(
                    namespace=state.namespace,
                    workflow_id=state.workflow_id,
                    run_id=state.run_id,
                    initiated_event_id=event.event_id,
                )
                step.outbox.append(
                    o.StartRun(
                        namespace=state.namespace,
                        start=m.StartWorkflow(
                            request_id=f"{state.run_id}/child/{event.event_id}",
                            workflow_type=command.workflow_type,
                            workflow_id=command.workflow_id,
                            input=command.input,
                            execution_timeout=command.execution_timeout,
                            parent=parent,
                        ),
                    )
                )
            case RequestCancelChild():
                initiated = state.seq_to_event.get(command.child_seq, 0)
                child = state.pending_children.get(initiated)
                step.append(
                    h.RequestCancelChildWorkflowExecution, seq=command.child_seq, initiated_event_id=initiated
                )
                if child is not None:
                    step.outbox.append(
                        o.CancelRun(
                            namespace=state.namespace,
                            workflow_id=child.workflow_id,
                            request_id=f"{state.run_id}/cancel-child/{initiated}",
                        )
                    )
            case CompleteWorkflow():
                self._close(step, h.WorkflowExecutionCompleted, result=command.result)
            case FailWorkflow():
                self._close(step, h.WorkflowExecutionFailed, failure=command.failure)
            case CancelWorkflow():
                self._close(step, h.WorkflowExecutionCanceled)
            case ContinueAsNew():
                new_run_id = self.new_id()
                step.outbox.append(
                    o.StartRun(
                        namespace=state.namespace,
                        run_id=new_run_id,
                        start=m.StartWorkflow(
                            request_id=f"{state.run_id}/continue",
                            workflow_type=command.workflow_type,
                            workflow_id=state.workflow_id,
                            input=command.input,
                            execution_timeout=command.execution_timeout,
                            parent=state.parent,
                            first_run_id=state.first_run_id,
                            continued_from_run_id=state.run_id,
                        ),
                    )
                )
                self._close(
                    step,
                    h.WorkflowExecutionContinuedAsNew,
                    new_run_id=new_run_id,
                    workflow_type=command.workflow_type,
                    input=command.input,
                    execution_timeout=command.execution_timeout,
                )

    def _close(self, step: _Step, event_type: type[Any], **fields: Any) -> None:
        state = step.state
        for activity in state.pending_activities.values():
            step.outbox.append(
                o.CancelActivityTask(run_id=state.run_id, scheduled_event_id=activity.scheduled_event_id)
            )
        for child in state.pending_children.values():
            # Parent close policy: terminate (as Temporal's default).
            step.outbox.append(
                o.CancelRun(
                    namespace=state.namespace,
                    workflow_id=child.workflow_id,
                    terminate=True,
                    request_id=f"{state.run_id}/close/{child.initiated_event_id}",
                    reason="parent closed",
                )
            )
        event = step.append(event_type, **fields)  # clears what is pending and disarms every timer
        step.outbox.append(
            o.RunClosed(
                namespace=state.namespace,
                workflow_id=state.workflow_id,
                run_id=state.run_id,
                status=state.status,
                result=state.result,
                failure=state.failure,
                new_run_id=state.new_run_id,
            )
        )
        if state.parent is not None and not isinstance(event, h.WorkflowExecutionContinuedAsNew):
            step.outbox.append(
                o.NotifyParent(
                    parent=state.parent,
                    child_workflow_id=state.workflow_id,
                    message=m.ChildClosed(
                        run_id=state.parent.run_id,
                        initiated_event_id=state.parent.initiated_event_id,
                        outcome=CHILD_OUTCOMES[state.status],
                        result=state.result,
                        failure=state.failure,
                    ),
                )
            )

    # -- parking -------------------------------------------------------------------------------------
    def _park_for(self, step: _Step, exc: BaseException) -> None:
        if isinstance(exc, NonDeterminismError):
            self._park(step, "nondeterminism", str(exc), "")
        elif isinstance(exc, UnknownWorkflowTypeError):
            self._park(step, "unknown_workflow_type", str(exc), "")
        elif isinstance(exc, WorkflowTaskError):
            cause = (
                "nondeterminism"
                if isinstance(exc.cause, NonDeterminismError | NondeterministicCallError)
                else "code_error"
            )
            self._park(step, cause, str(exc), exc.stack_trace)
        else:
            self._park(
                step,
                "code_error",
                f"{type(exc).__name__}: {exc}",
                "".join(traceback.format_exception(exc))[-8000:],
            )

    def _park(self, step: _Step, cause: str, message: str, stack: str) -> None:
        step.append(h.WorkflowTaskFailed, cause=cause, message=message, stack_trace=stack)

    def _done(self, step: _Step, instance: WorkflowInstance | None) -> Transition:
        if step.state.status != "running":
            instance = None
        usage = [*usage_of_events(step.state.namespace, step.state.run_id, step.events), *step.usage]
        if usage and step.state.workflow_type not in UNBILLED_WORKFLOW_TYPES:
            step.outbox.append(o.RecordUsage(records=usage))
        return Transition(step.state, step.events, step.outbox, instance)
