"""The execution state machine: (run state, message) -> new events, outbox entries and the next state.

Pure: the clock and the id source are injected, nothing here does I/O. The caller persists the events
and the state in one conditional write, then sends the outbox, then acknowledges the message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.commands import (
    CLOSE_COMMANDS,
    AcceptUpdate,
    CancelTimer,
    CancelWorkflow,
    Command,
    CompleteUpdate,
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
from perdure.platform.core.failures import Failure, TimeoutType
from perdure.platform.core.payloads import Payload
from perdure.platform.core.reset import plan_reset
from perdure.platform.core.retry import DEFAULT_ACTIVITY_RETRY
from perdure.platform.core.run_state import (
    InFlightTask,
    PendingActivity,
    PendingChild,
    PendingUpdate,
    RunLimits,
    RunState,
    apply_event,
    arm,
    attempt_timers,
    disarm_activity,
    new_run_state,
    rebuild_state,
    timer_key,
)
from perdure.platform.core.start_rules import fresh_run_id
from perdure.platform.core.usage import (
    UsageRecord,
    heartbeat_usage,
    update_rejection_usage,
    usage_of_events,
)

ChildOutcome = Literal["completed", "failed", "canceled", "terminated", "timed_out"]
CHILD_OUTCOMES: dict[str, ChildOutcome] = {
    "completed": "completed",
    "failed": "failed",
    "canceled": "canceled",
    "terminated": "terminated",
    "timed_out": "timed_out",
}


@dataclass
class ResetTransitions:
    """A reset: the new run (all its events are new) and what becomes of the run it was reset from
    (terminated, if it was open; else only its state gains the pointer)."""

    point: int
    new_run: Transition
    old_run: Transition


@dataclass
class Transition:
    state: RunState
    events: list[h.HistoryEvent] = field(default_factory=list)
    outbox: list[o.OutboxEntry] = field(default_factory=list)
    # Set when the message changed nothing, with the reason (duplicate, stale, closed run, ...).
    ignored: str | None = None
    # A limit of the run's history was neared in this transition (for the operator's log).
    warnings: list[str] = field(default_factory=list)

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
        # Whether an event the code must see was added: the run then needs a workflow task.
        self.activated = False
        # The history before this transition, to tell which limits its events passed without measuring
        # them again (a reset's new run has thousands).
        self.events_before = state.next_event_id - 1
        self.size_before = state.history_size

    def begin_history(self) -> None:
        """This transition's events are the run's whole history (a start, a reset's new run)."""
        self.events_before, self.size_before = 0, 0

    def append(self, event_type: type[Any], **fields: Any) -> Any:
        event = event_type(event_id=self.state.next_event_id, timestamp=self.now, **fields)
        self.events.append(event)
        if isinstance(event, h.ACTIVATION_EVENTS):
            self.activated = True
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


# Messages that may add an activation event wait while a workflow task is in flight, and behind those
# already waiting: a task's commands are recorded right after the one activation it was given, as a
# replay will issue them (one activation per task keeps a history replayable event by event).
_WAITS_FOR_TASK = frozenset(
    {
        "signal",
        "cancel",
        "activity_completed",
        "activity_failed",
        "child_started",
        "child_start_failed",
        "child_closed",
    }
)
_TIMERS_WAITING_FOR_TASK = frozenset(
    {"user_timer", "schedule_to_start", "start_to_close", "schedule_to_close", "heartbeat"}
)
MAX_BUFFERED_SIGNALS = 1000
MAX_BUFFERED_SIGNAL_BYTES = 4 * 1024 * 1024
# Updates a run holds at once, taken or not (Temporal's default), the size of the inputs of those not
# taken yet (kept in the run's document until then), and who may wait for one update's answer: past
# these a client's update is refused, so that no client grows a run's document without bound.
MAX_UPDATES_IN_FLIGHT = 10
MAX_PENDING_UPDATE_BYTES = 4 * 1024 * 1024
MAX_UPDATE_WAITERS = 32
DEFAULT_LIMITS = RunLimits()
TASK_RETRY_CAP = timedelta(seconds=60)
# How far ahead of the engine's clock a worker's clock may be for its continuation to be taken.
CONTINUATION_CLOCK_SKEW = timedelta(seconds=1)


@dataclass(frozen=True)
class TaskTimeouts:
    """How long a workflow task may take before it goes to any worker with the whole history: a
    sticky task (its worker may be gone) sooner than one on the shared queue."""

    sticky: timedelta = timedelta(seconds=5)
    shared: timedelta = timedelta(seconds=10)


class ExecutionStateMachine:
    """Owns a run's order, state and durability; never runs its code. Whenever the run has events its
    code has not seen, a workflow task goes to the namespace's workers; their commands come back as a
    ``WorkflowTaskCompleted`` message and are checked and recorded here."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        new_id: Callable[[], str],
        task_timeouts: TaskTimeouts | None = None,
        limits_of: Callable[[str], RunLimits] = lambda namespace: DEFAULT_LIMITS,
        unbilled_workflow_types: frozenset[str] = frozenset(),
    ) -> None:
        # What the billing policy leaves out (the platform's own runs in tenants' namespaces): the control
        # plane's to say, not the core's.
        self.unbilled_workflow_types = unbilled_workflow_types
        self.limits_of = limits_of
        self.clock = clock
        self.new_id = new_id
        self.task_timeouts = task_timeouts or TaskTimeouts()

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
        step.begin_history()
        step.events.append(started)
        step.activated = True
        step.announce_armed()
        if message.signal_name is not None:
            # Signal-with-start: the code starts first, then sees the signal (as a signal sent right
            # after the start would reach it).
            step.state.buffered.append(
                m.SignalWorkflow(
                    request_id=message.request_id, signal_name=message.signal_name, input=message.signal_input
                )
            )
        return self._done(step)

    def handle(self, state: RunState, message: m.RunMessage) -> Transition:
        """Apply ``message`` to the run."""
        if isinstance(message, m.StartWorkflow):
            return Transition(state, ignored=f"workflow {state.workflow_id!r} already has run {state.run_id}")
        if isinstance(message, m.QueryWorkflow):
            return Transition(state, ignored="a query changes nothing (see query())")
        if isinstance(message, m.UpdateWorkflow):
            return Transition(state, ignored="an update needs its waiter and the history (see update())")
        if isinstance(message, m.ResetWorkflow):
            return Transition(state, ignored="a reset needs the history and a new run id (see reset())")
        if (
            isinstance(message, m.CancelWorkflowRequest | m.TerminateWorkflowRequest)
            and message.first_run_id is not None
            and message.first_run_id != state.first_run_id
        ):
            # A parent's request for the child it started, met by another run of the child's id.
            return Transition(
                state, ignored=f"request for the runs from {message.first_run_id}, not run {state.run_id}"
            )
        if not state.is_open:
            if (
                isinstance(message, m.WorkflowTaskFailed)
                and message.cause == "cache_miss"
                and message.queries
            ):
                step = _Step(state.model_copy(deep=True), self.clock())
                self._query_tasks(step, message.queries)
                return Transition(state, outbox=step.outbox)
            return Transition(state, ignored=f"run {state.run_id} is closed ({state.status})")
        step = _Step(state.model_copy(deep=True), self.clock())
        if self._must_wait(step.state, message):
            if isinstance(message, m.SignalWorkflow) and self._buffer_full(step.state, message):
                # Only a client's signal is refused: what the platform and workers report is never dropped.
                return Transition(
                    state, ignored="refused: the signals waiting for the run's code are at their limit"
                )
            step.state.buffered.append(message)
            return self._done(step)
        handler = getattr(self, f"_on_{message.kind}")
        ignored: str | None = handler(step, message)
        if ignored is not None:
            return Transition(state, ignored=ignored)
        return self._done(step)

    def query(self, state: RunState, query: m.PendingQuery) -> Transition:
        """Send ``query`` to a worker: with the next workflow task if one is in flight (so it sees what
        came before it), else to the worker holding the run's instance, else with the whole history to
        any worker (closed or parked runs too). Changes the state only when the query has to wait."""
        step = _Step(state.model_copy(deep=True), self.clock())
        if state.is_open and (state.workflow_task is not None or state.buffered):
            step.state.pending_queries.append(query)
            return self._done(step)
        self._query_tasks(step, [query])
        return Transition(state, outbox=step.outbox)

    def update(
        self,
        state: RunState,
        update: m.UpdateWorkflow,
        waiter: m.UpdateWaiter | None,
        history: Sequence[h.HistoryEvent],
    ) -> Transition:
        """Take an update for the run's code, or answer it at once. An id the run finished lately is
        answered with its outcome (from its completed event in ``history``); one in progress gets
        ``waiter`` as one more waiter (or its "accepted" answer); a closed run refuses it; a new one
        waits for the next workflow task (one is sent if none is in flight), behind the messages that
        waited before it. The update becomes an event only once the code takes it."""
        step = _Step(state.model_copy(deep=True), self.clock())
        waiters = [waiter] if waiter is not None else []
        update_id = update.update_id
        completed_event_id = state.completed_update(update_id)
        if completed_event_id is not None and 0 < completed_event_id <= len(history):
            event = history[completed_event_id - 1]
            if isinstance(event, h.WorkflowExecutionUpdateCompleted) and event.update_id == update_id:
                self._reply_outcome(step, update_id, waiters, event.result, event.failure)
                return Transition(state, outbox=step.outbox)
        accepted = step.state.accepted_update(update_id)
        if accepted is not None:
            if waiter is not None and waiter.wait_for == "accepted":
                self._reply_update(step, update_id, waiters, "accepted")
                return Transition(state, outbox=step.outbox)
            if waiter is None:
                return Transition(state, ignored=f"update {update_id} is in progress")
            _add_waiter(accepted.waiters, waiter)
            return self._done(step)
        if not state.is_open:
            self._reply_update(
                step,
                update_id,
                waiters,
                "run_closed",
                message=f"run {state.run_id} of workflow {state.workflow_id!r} is closed ({state.status}): "
                "it takes no update",
                run_status=state.status,
            )
            return Transition(state, outbox=step.outbox)
        pending = step.state.pending_update(update_id)
        if pending is not None:
            if waiter is None:
                return Transition(state, ignored=f"update {update_id} waits for the run's code already")
            _add_waiter(pending.waiters, waiter)
            return self._done(step)
        refusal = self._update_refusal(state, update)
        if refusal is not None:
            failure = Failure(kind="application", message=refusal, type="UpdateLimitExceeded")
            self._reply_update(step, update_id, waiters, "rejected", failure=failure)
            return Transition(state, outbox=step.outbox)
        step.state.pending_updates.append(
            PendingUpdate(
                update_id=update_id,
                update_name=update.update_name,
                input=update.input,
                waiters=waiters,
                behind=len(state.buffered),
            )
        )
        return self._done(step)

    @staticmethod
    def _update_refusal(state: RunState, update: m.UpdateWorkflow) -> str | None:
        """Why a new update cannot be taken: the run holds as many updates as it may, or the inputs of
        those waiting for its code would pass their size."""
        in_flight = len(state.pending_updates) + len(state.accepted_updates)
        if in_flight >= MAX_UPDATES_IN_FLIGHT:
            return (
                f"the run has {in_flight} updates in progress, as many as it may hold at once "
                f"({MAX_UPDATES_IN_FLIGHT}): send it again once some have finished"
            )
        size = sum(len(p.data) for u in state.pending_updates for p in u.input)
        size += sum(len(p.data) for p in update.input)
        if size > MAX_PENDING_UPDATE_BYTES:
            return (
                f"the inputs of the updates waiting for the run's code would come to {size} bytes; "
                f"a run keeps {MAX_PENDING_UPDATE_BYTES} at most: send it again once they are taken"
            )
        return None

    def recover(self, history: Sequence[h.HistoryEvent]) -> Transition:
        """Continue a run from its history alone (as after losing everything but the history): rebuild
        the state, re-dispatch pending activity attempts, re-arm every timer, and hand the whole history
        to a worker so the commands the code issues past its end are recorded."""
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
        step.activated = state.status == "running"
        return self._done(step)

    def reset(
        self,
        state: RunState,
        history: Sequence[h.HistoryEvent],
        reset: m.ResetWorkflow,
        new_run_id: str,
    ) -> ResetTransitions:
        """Reset the run (``state``, its whole ``history``) into a new run ``new_run_id``: the history
        prefix up to the reset point, a reset event, then the signals carried over as signal events (all
        of them new events of the new run). The new run continues as a recovered run does (activities
        pending at the point are dispatched again, timers armed again, the whole history goes to a
        worker, whose code decides again at the point and then takes the carried signals); only the reset
        itself is billed. Raises ``ResetRefused``, also when the new run's history would reach the
        namespace's history limits. Reads the history once (see ``plan_reset``)."""
        now = self.clock()
        plan = plan_reset(state, history, reset, new_run_id, now, self.limits_of(state.namespace))
        fresh = plan.state
        step = _Step(fresh, now)
        step.begin_history()
        step.events.extend(plan.events)
        redispatched = [a for a in fresh.pending_activities.values() if a.phase != "backoff"]
        for activity in redispatched:
            disarm_activity(fresh, activity.scheduled_event_id, include_schedule_to_close=False)
            activity.phase, activity.started_at, activity.attempt_dispatched_at = "scheduled", None, now
            attempt_timers(fresh, activity, now)
        step.announce_armed()
        for activity in redispatched:
            self._dispatch(step, activity)
        step.activated = True
        new_run = self._done(step, billed=[plan.marker])
        old_run = self.reset_into(state, new_run_id, plan.point, reset.reason)
        return ResetTransitions(point=plan.point, new_run=new_run, old_run=old_run)

    def reset_into(self, state: RunState, new_run_id: str, point: int, reason: str) -> Transition:
        """The run reset from: terminated (if open) with a pointer to the run that goes on in its place;
        a closed run keeps its close and gains the pointer in its state only."""
        step = _Step(state.model_copy(deep=True), self.clock())
        if state.is_open:
            why = f"reset: {reason}" if reason else "reset"
            self._close(step, h.WorkflowExecutionTerminated, reason=why, new_run_id=new_run_id)
        step.state.reset_run_id, step.state.reset_point = new_run_id, point
        return self._done(step)

    # -- workflow tasks -------------------------------------------------------------------------------
    @staticmethod
    def _buffer_full(state: RunState, signal: m.SignalWorkflow) -> bool:
        """Whether the signals waiting (kept in the run's document) would pass their count or size."""
        signals = [b for b in state.buffered if isinstance(b, m.SignalWorkflow)]
        size = sum(len(p.data) for b in [*signals, signal] for p in b.input)
        return len(signals) >= MAX_BUFFERED_SIGNALS or size > MAX_BUFFERED_SIGNAL_BYTES

    @staticmethod
    def _must_wait(state: RunState, message: m.RunMessage) -> bool:
        if isinstance(message, m.TimerFiredNotice):
            waits = message.purpose in _TIMERS_WAITING_FOR_TASK
        else:
            waits = message.kind in _WAITS_FOR_TASK
        if not waits:
            return False
        return state.workflow_task is not None or (bool(state.buffered) and state.status == "running")

    def _dispatch_task(self, step: _Step, *, whole_history: bool = False) -> None:
        state = step.state
        queries, state.pending_queries = state.pending_queries, []
        if whole_history:
            state.sticky_queue = None
        sticky = state.sticky_queue
        state.task_sequence += 1
        task = InFlightTask(
            task_id=f"{state.run_id}/task/{state.task_sequence}",
            sequence=state.task_sequence,
            sticky_queue=sticky,
            first_event_id=state.worker_seen_event_id + 1 if sticky else 1,
            last_event_id=state.next_event_id - 1,
            dispatched_at=step.now,
        )
        updates = [
            m.UpdateInput(update_id=u.update_id, update_name=u.update_name, input=u.input)
            for u in _ready_updates(state)
        ]
        task.update_ids = [u.update_id for u in updates]
        state.workflow_task = task
        timeout = self.task_timeouts.sticky if sticky else self.task_timeouts.shared
        step.arm("workflow_task_timeout", step.now + timeout, task.sequence)
        step.outbox.append(
            self._task_entry(
                state,
                sticky,
                task.first_event_id,
                task.last_event_id,
                queries,
                task.task_id,
                updates,
            )
        )

    def _query_tasks(self, step: _Step, queries: Sequence[m.PendingQuery]) -> None:
        """Query-only tasks: to the sticky worker (no events: its instance has seen every activation),
        else with the whole history."""
        state = step.state
        sticky = state.sticky_queue if state.status == "running" and state.is_open else None
        first, last = (
            (state.worker_seen_event_id + 1, state.worker_seen_event_id)
            if sticky
            else (1, state.next_event_id - 1)
        )
        step.outbox.append(self._task_entry(state, sticky, first, last, list(queries)))

    def _task_entry(
        self,
        state: RunState,
        sticky: str | None,
        first: int,
        last: int,
        queries: list[m.PendingQuery],
        task_id: str = "",
        updates: list[m.UpdateInput] | None = None,
    ) -> o.DispatchWorkflowTask:
        timeout = self.task_timeouts.sticky if sticky else self.task_timeouts.shared
        return o.DispatchWorkflowTask(
            namespace=state.namespace,
            workflow_id=state.workflow_id,
            workflow_type=state.workflow_type,
            run_id=state.run_id,
            task_id=task_id,
            sticky_queue=sticky,
            first_event_id=first,
            last_event_id=last,
            queries=queries,
            updates=updates or [],
            timeout_seconds=timeout.total_seconds(),
        )

    def _end_task(self, step: _Step) -> InFlightTask | None:
        task, step.state.workflow_task = step.state.workflow_task, None
        step.change(
            lambda: step.state.armed_timers.pop(timer_key(step.state.run_id, "workflow_task_timeout"), None)
        )
        return task

    def _abandon_task(self, step: _Step) -> None:
        self._end_task(step)
        step.state.sticky_queue = None
        step.activated = True  # whatever the abandoned task was given goes out again

    def _flush_buffer(self, step: _Step) -> None:
        """Apply the messages that waited, in their order, up to the first that gives the code an
        activation (the rest wait for its task); a parked run takes them all (its code sees them when
        it runs again, replaying)."""
        state = step.state
        while state.buffered and state.is_open and state.workflow_task is None:
            if step.activated and state.status == "running":
                return
            message = state.buffered.pop(0)
            for update in state.pending_updates:
                update.behind = max(0, update.behind - 1)  # one fewer message before it
            getattr(self, f"_on_{message.kind}")(step, message)
        if not state.is_open:
            state.buffered = []

    def _on_workflow_task_completed(self, step: _Step, message: m.WorkflowTaskCompleted) -> str | None:
        state = step.state
        task = state.workflow_task
        if task is None or message.run_id != state.run_id or message.task_id != task.task_id:
            return "completion of a stale workflow task"
        problem = check_commands(message.commands) or check_update_decisions(
            state, task.update_ids, message.commands, message.update_rejections
        )
        if problem is not None:
            return self._task_failed(
                step, "code_error", f"the worker sent commands that cannot be recorded: {problem}", ""
            )
        self._end_task(step)
        if state.status == "blocked":
            step.append(h.WorkflowTaskRedriven, request_id=f"{task.task_id}/recovered")
        self._refuse_updates(step, message.update_rejections)
        self._take_commands(step, message.sticky_queue, task.last_event_id, message.commands)
        self._settle_carried_updates(step, task)
        self._flush_buffer(step)
        return None

    def _refuse_updates(self, step: _Step, rejections: Sequence[m.UpdateRejection]) -> None:
        """The updates the code refused: answered, billed (the code saw them), and forgotten."""
        state = step.state
        for rejection in rejections:
            pending = state.pending_update(rejection.update_id)
            if pending is None:
                continue
            state.pending_updates.remove(pending)
            failure = rejection.failure
            self._reply_update(step, pending.update_id, pending.waiters, "rejected", failure=failure)
            step.usage.append(
                update_rejection_usage(state.namespace, state.run_id, pending.update_id, step.now)
            )

    def _settle_carried_updates(self, step: _Step, task: InFlightTask) -> None:
        """A task's updates its worker neither took nor refused (a worker that knows no updates) are
        refused: sending them again would only meet the same worker."""
        state = step.state
        for update_id in task.update_ids:
            pending = state.pending_update(update_id)
            if pending is None or not state.is_open:
                continue
            state.pending_updates.remove(pending)
            failure = Failure(
                kind="application",
                message=f"the worker ({state.sticky_queue or 'any'}) neither took nor refused update "
                f"{pending.update_name!r}: does it run a version that knows updates?",
                type="UpdateNotHandled",
            )
            self._reply_update(step, update_id, pending.waiters, "rejected", failure=failure)

    def _take_commands(
        self, step: _Step, sticky_queue: str | None, seen_event_id: int, commands: Sequence[Command]
    ) -> None:
        """A workflow task succeeded: its worker saw the events up to ``seen_event_id`` (and keeps the
        instance on ``sticky_queue``, if any); record the commands it issued, until the run closes."""
        state = step.state
        state.task_failures = 0
        state.sticky_queue = sticky_queue
        state.worker_seen_event_id = seen_event_id
        for command in commands:
            if not state.is_open:
                break
            self._record(step, command)

    def _on_workflow_task_failed(self, step: _Step, message: m.WorkflowTaskFailed) -> str | None:
        state = step.state
        task = state.workflow_task
        if message.cause == "cache_miss" and not message.task_id:
            state.sticky_queue = None  # that worker no longer holds the instance
            self._query_tasks(step, message.queries)
            return None
        if task is None or message.run_id != state.run_id or message.task_id != task.task_id:
            return "failure of a stale workflow task"
        if message.cause == "cache_miss":
            state.pending_queries[:0] = message.queries  # they go out again with the whole history
            self._abandon_task(step)
            return None
        return self._task_failed(step, message.cause, message.message, message.stack_trace)

    def _task_failed(
        self, step: _Step, cause: h.WorkflowTaskFailureCause, reason: str, stack: str
    ) -> str | None:
        state = step.state
        self._end_task(step)
        state.sticky_queue = None
        state.task_failures += 1
        if state.status == "running":
            step.append(h.WorkflowTaskFailed, cause=cause, message=reason, stack_trace=stack[-8000:])
        backoff = min(TASK_RETRY_CAP, timedelta(seconds=2 ** min(state.task_failures - 1, 10)))
        step.arm("workflow_task_retry", step.now + backoff, state.task_failures)
        self._flush_buffer(step)
        queries, state.pending_queries = state.pending_queries, []
        if queries:
            self._query_tasks(step, queries)
        return None

    def _on_redrive(self, step: _Step, message: m.RedriveRun) -> str | None:
        if step.state.status != "blocked":
            return "run is not blocked"
        self._end_task(step)
        step.change(
            lambda: step.state.armed_timers.pop(timer_key(step.state.run_id, "workflow_task_retry"), None)
        )
        step.append(h.WorkflowTaskRedriven, request_id=message.request_id)
        self._flush_buffer(step)
        self._dispatch_task(step, whole_history=True)
        return None

    # -- message handlers (return a reason when the message changes nothing) -------------------------
    def _on_signal(self, step: _Step, message: m.SignalWorkflow) -> str | None:
        if message.request_id and message.request_id in step.state.recent_request_ids:
            return f"duplicate signal request {message.request_id}"
        step.append(
            h.WorkflowExecutionSignaled,
            signal_name=message.signal_name,
            input=message.input,
            request_id=message.request_id,
            reapplied_from_run_id=message.reapplied_from_run_id,
        )
        return None

    def _on_cancel(self, step: _Step, message: m.CancelWorkflowRequest) -> str | None:
        if step.state.cancel_requested:
            return "cancellation already requested"
        step.append(h.WorkflowExecutionCancelRequested, reason=message.reason, request_id=message.request_id)
        return None

    def _on_terminate(self, step: _Step, message: m.TerminateWorkflowRequest) -> str | None:
        self._close(step, h.WorkflowExecutionTerminated, reason=message.reason)
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
        continuation = message.continuation
        fits = continuation is not None and self._continuation_fits(step, activity, continuation)
        if continuation is not None and fits:
            # The code saw the result at the worker's time: so must every replay of it.
            step.now = continuation.completed_at
        if activity.phase == "scheduled":
            self._record_started(step, activity)
        step.append(
            h.ActivityTaskCompleted,
            scheduled_event_id=activity.scheduled_event_id,
            attempt=activity.attempt,
            result=message.result,
        )
        if continuation is not None and fits:
            self._continue(step, continuation)
        elif continuation is not None and continuation.sticky_queue == step.state.sticky_queue:
            # That worker's instance went past what was recorded: the task goes with the whole history.
            step.state.sticky_queue = None
        return None

    def _continuation_fits(
        self, step: _Step, activity: PendingActivity, continuation: m.Continuation
    ) -> bool:
        """Whether the history is what the worker took it to be when it went on with this result: the
        run's events since its instance's last task are its last commands' alone, this result is the
        only thing that happens to the run now, and its time is one the history can have."""
        state = step.state
        last = state.next_event_id + (1 if activity.phase == "scheduled" else 0)
        return (
            state.status == "running"
            and state.workflow_task is None
            and not state.buffered
            and not state.pending_queries
            and not state.pending_updates
            and not step.events
            and state.sticky_queue is not None
            and continuation.sticky_queue == state.sticky_queue
            and continuation.first_event_id == state.worker_seen_event_id + 1
            and continuation.last_event_id == last
            and activity.scheduled_time <= continuation.completed_at <= step.now + CONTINUATION_CLOCK_SKEW
            and check_commands(continuation.commands) is None
            and check_update_decisions(state, [], continuation.commands, []) is None
        )

    def _continue(self, step: _Step, continuation: m.Continuation) -> None:
        """Record a continuation's commands as the completed workflow task this result would have
        caused: the worker has seen every event up to the result."""
        step.activated = False
        self._take_commands(
            step, continuation.sticky_queue, continuation.last_event_id, continuation.commands
        )

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
            step.append(h.TimerFired, started_event_id=notice.event_id)
            return None
        if notice.purpose == "execution_timeout":
            self._close(step, h.WorkflowExecutionTimedOut)
            return None
        if notice.purpose == "workflow_task_timeout":
            task = state.workflow_task
            if task is None or task.sequence != notice.event_id:
                return "timeout of a finished workflow task"
            # The worker is slow or gone: any worker gets the whole history (a parked run's retry too).
            self._abandon_task(step)
            if state.status == "blocked":
                self._dispatch_task(step, whole_history=True)
            return None
        if notice.purpose == "workflow_task_retry":
            if state.status != "blocked" or state.workflow_task is not None:
                return "no failed workflow task to retry"
            self._dispatch_task(step, whole_history=True)
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
        step.append(
            h.StartChildWorkflowExecutionFailed,
            initiated_event_id=message.initiated_event_id,
            cause=message.cause,
        )
        return None

    def _on_child_closed(self, step: _Step, message: m.ChildClosed) -> str | None:
        if (
            message.run_id != step.state.run_id
            or message.initiated_event_id not in step.state.pending_children
        ):
            return "stale child close"
        step.append(
            h.ChildWorkflowExecutionClosed,
            initiated_event_id=message.initiated_event_id,
            outcome=message.outcome,
            result=message.result,
            failure=message.failure,
        )
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
            step.append(
                h.ActivityTaskFailed,
                scheduled_event_id=activity.scheduled_event_id,
                attempt=activity.attempt,
                failure=failure,
            )

    def _time_out(self, step: _Step, activity: PendingActivity, timeout_type: TimeoutType) -> None:
        step.append(
            h.ActivityTaskTimedOut,
            scheduled_event_id=activity.scheduled_event_id,
            attempt=activity.attempt,
            timeout_type=timeout_type,
            last_failure=activity.last_failure,
        )

    # -- recording commands ------------------------------------------------------------------------
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
                            request_id=_child_request_id(state, event.event_id),
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
                            first_run_id=_child_run_id(state, child),
                        )
                    )
            case AcceptUpdate():
                offered = state.pending_update(command.update_id)
                assert offered is not None  # check_update_decisions made sure
                state.pending_updates.remove(offered)
                step.append(
                    h.WorkflowExecutionUpdateAccepted,
                    update_id=offered.update_id,
                    update_name=offered.update_name,
                    input=offered.input,
                )
                accepted = state.accepted_update(offered.update_id)
                assert accepted is not None
                accepted.waiters = [w for w in offered.waiters if w.wait_for == "completed"]
                early = [w for w in offered.waiters if w.wait_for == "accepted"]
                self._reply_update(step, offered.update_id, early, "accepted")
            case CompleteUpdate():
                taken = state.accepted_update(command.update_id)
                assert taken is not None  # check_update_decisions made sure
                step.append(
                    h.WorkflowExecutionUpdateCompleted,
                    update_id=command.update_id,
                    accepted_event_id=taken.accepted_event_id,
                    result=command.result,
                    failure=command.failure,
                )
                self._reply_outcome(step, command.update_id, taken.waiters, command.result, command.failure)
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
                    first_run_id=_child_run_id(state, child),
                )
            )
        unfinished, untaken = list(state.accepted_updates), list(state.pending_updates)
        step.append(event_type, **fields)  # clears what is pending and disarms every timer
        for accepted in unfinished:
            failure = Failure(
                kind="application",
                message=f"the run closed ({state.status}) before the update's handler finished",
                type="AcceptedUpdateCompletedWorkflow",
            )
            self._reply_update(step, accepted.update_id, accepted.waiters, "failed", failure=failure)
        for pending in untaken:
            self._reply_update(
                step,
                pending.update_id,
                pending.waiters,
                "run_closed",
                message=f"run {state.run_id} of workflow {state.workflow_id!r} closed ({state.status}) "
                "before its code took the update",
                run_status=state.status,
            )
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
        # A run that goes on in another (continued as new, or reset: ``new_run_id``) keeps its parent;
        # that run tells the parent how it closes. Telling it now would close the child for the parent.
        if state.parent is not None and state.new_run_id is None:
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

    def _reply_update(
        self,
        step: _Step,
        update_id: str,
        waiters: Sequence[m.UpdateWaiter],
        outcome: o.UpdateOutcome,
        **fields: Any,
    ) -> None:
        """Answer an update's waiters, through the outbox: after the write that records what they are
        told (sent again after a crash, like any outbox entry)."""
        if not waiters:
            return
        state = step.state
        step.outbox.append(
            o.UpdateReply(
                namespace=state.namespace,
                workflow_id=state.workflow_id,
                run_id=state.run_id,
                update_id=update_id,
                waiters=list(waiters),
                outcome=outcome,
                **fields,
            )
        )

    def _reply_outcome(
        self,
        step: _Step,
        update_id: str,
        waiters: Sequence[m.UpdateWaiter],
        result: Payload | None,
        failure: Failure | None,
    ) -> None:
        if failure is not None:
            self._reply_update(step, update_id, waiters, "failed", failure=failure)
        else:
            self._reply_update(step, update_id, waiters, "completed", result=result)

    def _done(self, step: _Step, *, billed: Sequence[h.HistoryEvent] | None = None) -> Transition:
        """The transition ``step`` made; its events are billed unless ``billed`` says which are."""
        state = step.state
        warnings = self._hold_to_limits(step) if step.events else []
        if not state.is_open and state.pending_queries:
            # Closed with queries waiting for a task that will not come: they go with the whole history.
            queries, state.pending_queries = state.pending_queries, []
            self._query_tasks(step, queries)
        if (
            state.status == "running"
            and state.workflow_task is None
            and (step.activated or state.pending_queries or _ready_updates(state))
        ):
            self._dispatch_task(step)
        events = step.events if billed is None else billed
        usage = [*usage_of_events(state.namespace, state.run_id, events), *step.usage]
        if usage and state.workflow_type not in self.unbilled_workflow_types:
            step.outbox.append(o.RecordUsage(records=usage))
        return Transition(state, step.events, step.outbox, warnings=warnings)

    def _hold_to_limits(self, step: _Step) -> list[str]:
        state = step.state
        limits = self.limits_of(state.namespace)
        events = state.next_event_id - 1
        before_events, before_size = step.events_before, step.size_before
        warnings = []
        if before_events < limits.warn_events <= events:
            warnings.append(f"history of {events} events (the limit is {limits.max_events})")
        if before_size < limits.warn_bytes <= state.history_size:
            warnings.append(f"history of {state.history_size} bytes (the limit is {limits.max_bytes})")
        if state.is_open and (events >= limits.max_events or state.history_size >= limits.max_bytes):
            reason = (
                f"history limit exceeded: {events} events and {state.history_size} bytes "
                f"(the namespace allows {limits.max_events} events and {limits.max_bytes} bytes)"
            )
            self._close(step, h.WorkflowExecutionTerminated, reason=reason)
        return warnings


def check_commands(commands: Sequence[Command]) -> str | None:
    """What makes a worker's commands unrecordable, if anything: they come from tenant code's process
    and are checked like any input (the state machine records each as one event)."""
    seqs = [
        c.seq
        for c in commands
        if isinstance(
            c, ScheduleActivity | StartTimer | RecordMarker | UpsertSearchAttributes | StartChildWorkflow
        )
    ]
    if len(seqs) != len(set(seqs)):
        return "two commands share a sequence number"
    closes = [i for i, c in enumerate(commands) if isinstance(c, CLOSE_COMMANDS)]
    if closes and closes[0] != len(commands) - 1:
        return "a command follows the command that closes the run"
    return None


def check_update_decisions(
    state: RunState,
    carried: Sequence[str],
    commands: Sequence[Command],
    rejections: Sequence[m.UpdateRejection],
) -> str | None:
    """What makes a worker's decisions on updates unrecordable, if anything: each update the task
    carried is taken or refused once at most, under its own name; only taken updates complete, once."""
    decided: set[str] = set()
    taken: set[str] = set()
    completed: set[str] = set()
    for rejection in rejections:
        if rejection.update_id not in carried or rejection.update_id in decided:
            return f"a refusal of update {rejection.update_id!r}, which the task did not carry (or twice)"
        decided.add(rejection.update_id)
    for command in commands:
        if isinstance(command, AcceptUpdate):
            pending = state.pending_update(command.update_id)
            if command.update_id not in carried or command.update_id in decided or pending is None:
                return f"an acceptance of update {command.update_id!r}, not carried by the task (or twice)"
            if pending.update_name != command.update_name:
                return f"update {command.update_id!r} is {pending.update_name!r}, not {command.update_name!r}"
            decided.add(command.update_id)
            taken.add(command.update_id)
        elif isinstance(command, CompleteUpdate):
            running = command.update_id in taken or state.accepted_update(command.update_id) is not None
            if not running or command.update_id in completed:
                return f"a completion of update {command.update_id!r}, which is not in progress (or twice)"
            if command.result is not None and command.failure is not None:
                return f"update {command.update_id!r} completes with both a result and a failure"
            completed.add(command.update_id)
    return None


def _child_run_id(state: RunState, child: PendingChild) -> str:
    """The run of ``child`` this run started: recorded once the child started, else the one its start
    makes (its run id follows from the start's request id), if it makes one."""
    if child.run_id is not None:
        return child.run_id
    request_id = _child_request_id(state, child.initiated_event_id)
    return fresh_run_id(state.namespace, child.workflow_id, request_id)


def _child_request_id(state: RunState, initiated_event_id: int) -> str:
    return f"{state.run_id}/child/{initiated_event_id}"


def _ready_updates(state: RunState) -> list[PendingUpdate]:
    """The updates the next workflow task carries: those with no message before them still waiting."""
    return [u for u in state.pending_updates if u.behind == 0 or not state.buffered]


def _add_waiter(waiters: list[m.UpdateWaiter], waiter: m.UpdateWaiter) -> None:
    """One more waiter for an update. A client asking again (a silence, a reconnect) replaces its
    earlier ask; the oldest are dropped past the bound (they ask again)."""
    waiters[:] = [w for w in waiters if (w.reply_to, w.wait_for) != (waiter.reply_to, waiter.wait_for)]
    waiters.append(waiter)
    del waiters[:-MAX_UPDATE_WAITERS]
