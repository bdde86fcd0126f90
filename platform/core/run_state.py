"""The state of one run, kept beside its history: what is pending, which timers are armed, its status.

Everything here can be rebuilt from the history alone (``rebuild_state``); the stored copy only saves
reading the history on every message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from perdure.platform.core import history as h
from perdure.platform.core.failures import Failure
from perdure.platform.core.messages import (
    PendingQuery,
    RunMessage,
    TimerFiredNotice,
    TimerPurpose,
    UpdateWaiter,
)
from perdure.platform.core.payloads import Payload

RunStatus = Literal[
    "running", "blocked", "completed", "failed", "canceled", "terminated", "timed_out", "continued_as_new"
]
OPEN_STATUSES: tuple[RunStatus, ...] = ("running", "blocked")
MAX_REMEMBERED_REQUESTS = 256
# Updates whose outcome a run answers from its history when their id comes again (the latest ones).
MAX_REMEMBERED_UPDATES = 256


class PendingActivity(BaseModel):
    scheduled_event_id: int
    seq: int
    activity_type: str
    input: list[Payload]
    options: h.ActivityOptions
    scheduled_time: datetime
    attempt: int = 1
    phase: Literal["scheduled", "started", "backoff"] = "scheduled"
    attempt_dispatched_at: datetime
    started_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    heartbeat_details: list[Payload] = []
    last_failure: Failure | None = None


class PendingTimer(BaseModel):
    started_event_id: int
    seq: int
    fire_at: datetime


class PendingChild(BaseModel):
    initiated_event_id: int
    seq: int
    workflow_id: str
    workflow_type: str
    run_id: str | None = None


class ArmedTimer(BaseModel):
    fire_at: datetime
    notice: TimerFiredNotice


class RunLimits(BaseModel):
    """How long and how large a run's history may grow (Temporal's defaults): past a warning the engine
    says so once; past a limit the run is terminated with the reason, so a runaway loop ends instead of
    filling the database."""

    model_config = ConfigDict(frozen=True)

    warn_events: int = Field(default=10_240, ge=1)
    max_events: int = Field(default=51_200, ge=2)
    warn_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)


class InFlightTask(BaseModel):
    """The one workflow task of a run that a worker may be working on, and the updates it carries."""

    task_id: str
    sequence: int
    sticky_queue: str | None
    first_event_id: int
    last_event_id: int
    dispatched_at: datetime
    update_ids: list[str] = Field(default_factory=list)


class PendingUpdate(BaseModel):
    """An update the run's code has not taken or refused yet, and who waits for its answer. ``behind``
    counts the messages that waited for the run's code before it came (``RunState.buffered``): it goes
    to the code once they are applied, so it sees them as its sender did."""

    update_id: str
    update_name: str
    input: list[Payload] = Field(default_factory=list)
    waiters: list[UpdateWaiter] = Field(default_factory=list)
    behind: int = 0


class CompletedUpdate(BaseModel):
    update_id: str
    completed_event_id: int


class AcceptedUpdate(BaseModel):
    """An update the code took and whose handler has not finished, and who waits for its outcome."""

    update_id: str
    update_name: str
    accepted_event_id: int
    waiters: list[UpdateWaiter] = Field(default_factory=list)


class RunState(BaseModel):
    model_config = ConfigDict(validate_assignment=False)

    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    first_run_id: str
    status: RunStatus = "running"
    next_event_id: int = 1
    start_time: datetime
    close_time: datetime | None = None
    execution_timeout: timedelta | None = None
    parent: h.ParentRef | None = None
    start_request_id: str = ""
    pending_activities: dict[int, PendingActivity] = Field(default_factory=dict)
    pending_timers: dict[int, PendingTimer] = Field(default_factory=dict)
    pending_children: dict[int, PendingChild] = Field(default_factory=dict)
    seq_to_event: dict[int, int] = Field(default_factory=dict)
    armed_timers: dict[str, ArmedTimer] = Field(default_factory=dict)
    cancel_requested: bool = False
    recent_request_ids: list[str] = Field(default_factory=list)
    blocked_reason: str | None = None
    result: Payload | None = None
    failure: Failure | None = None
    new_run_id: str | None = None
    # Resets (docs/reset.md): the run this one was reset into, and the event it was reset to; or, on a
    # run a reset made, the run it was reset from (and the same event of that run).
    reset_run_id: str | None = None
    reset_from_run_id: str | None = None
    reset_point: int | None = None
    search_attributes: dict[str, h.SearchAttributeValue] = Field(default_factory=dict)
    # Workflow tasks (the code runs in workers): the task in flight, the worker queue that holds the
    # run's instance and the last event that instance has seen, messages that arrived while a task was
    # in flight (applied once it ends, so a task's commands follow the events it was given), queries
    # waiting for the next task, and consecutive task failures (for the retry's backoff).
    workflow_task: InFlightTask | None = None
    task_sequence: int = 0
    sticky_queue: str | None = None
    worker_seen_event_id: int = 0
    buffered: list[RunMessage] = Field(default_factory=list)
    pending_queries: list[PendingQuery] = Field(default_factory=list)
    # Updates: waiting for the code to take them, taken and unfinished, and the latest finished (their
    # completed events, to answer their ids again from the history). Lists, not maps keyed by the ids:
    # an id is the client's string, and a stored document's keys may hold no '.' nor start with '$'.
    pending_updates: list[PendingUpdate] = Field(default_factory=list)
    accepted_updates: list[AcceptedUpdate] = Field(default_factory=list)
    completed_updates: list[CompletedUpdate] = Field(default_factory=list)
    task_failures: int = 0
    # The history's size as stored (its events as JSON), held to the namespace's limits.
    history_size: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    # Finished items leave the state together with their seq mapping, so the state (copied on every
    # message) stays as small as what is pending, however long the history grows.
    def drop_activity(self, scheduled_event_id: int) -> PendingActivity | None:
        activity = self.pending_activities.pop(scheduled_event_id, None)
        if activity is not None:
            self.seq_to_event.pop(activity.seq, None)
        return activity

    def drop_timer(self, started_event_id: int) -> PendingTimer | None:
        timer = self.pending_timers.pop(started_event_id, None)
        if timer is not None:
            self.seq_to_event.pop(timer.seq, None)
        return timer

    def drop_child(self, initiated_event_id: int) -> PendingChild | None:
        child = self.pending_children.pop(initiated_event_id, None)
        if child is not None:
            self.seq_to_event.pop(child.seq, None)
        return child

    def pending_update(self, update_id: str) -> PendingUpdate | None:
        return next((u for u in self.pending_updates if u.update_id == update_id), None)

    def accepted_update(self, update_id: str) -> AcceptedUpdate | None:
        return next((u for u in self.accepted_updates if u.update_id == update_id), None)

    def completed_update(self, update_id: str) -> int | None:
        """The completed event of the update, if it finished lately."""
        found = next((u for u in reversed(self.completed_updates) if u.update_id == update_id), None)
        return found.completed_event_id if found is not None else None

    def remember_request(self, request_id: str) -> None:
        if request_id:
            self.recent_request_ids.append(request_id)
            del self.recent_request_ids[:-MAX_REMEMBERED_REQUESTS]


def timer_key(run_id: str, purpose: TimerPurpose, event_id: int = 0, attempt: int = 0) -> str:
    if purpose == "user_timer":
        return f"{run_id}/timer/{event_id}"
    if purpose in ("execution_timeout", "workflow_task_timeout", "workflow_task_retry"):
        return f"{run_id}/{purpose}"
    if purpose == "schedule_to_close":
        return f"{run_id}/activity/{event_id}/schedule_to_close"
    return f"{run_id}/activity/{event_id}/{attempt}/{purpose}"


def arm(
    state: RunState, purpose: TimerPurpose, fire_at: datetime, event_id: int = 0, attempt: int = 0
) -> str:
    key = timer_key(state.run_id, purpose, event_id, attempt)
    notice = TimerFiredNotice(
        run_id=state.run_id, timer_key=key, purpose=purpose, event_id=event_id, attempt=attempt
    )
    state.armed_timers[key] = ArmedTimer(fire_at=fire_at, notice=notice)
    return key


def attempt_timers(state: RunState, activity: PendingActivity, now: datetime) -> list[str]:
    """Arm the timers of the activity's current attempt (dispatched at ``now``)."""
    options = activity.options
    keys = []
    if options.schedule_to_start_timeout is not None:
        keys.append(
            arm(
                state,
                "schedule_to_start",
                now + options.schedule_to_start_timeout,
                activity.scheduled_event_id,
                activity.attempt,
            )
        )
    if options.start_to_close_timeout is not None:
        # Armed at dispatch too, so a dispatch that never starts (a lost task) also times out.
        keys.append(
            arm(
                state,
                "start_to_close",
                now + options.start_to_close_timeout,
                activity.scheduled_event_id,
                activity.attempt,
            )
        )
    if options.heartbeat_timeout is not None:
        keys.append(
            arm(
                state,
                "heartbeat",
                now + options.heartbeat_timeout,
                activity.scheduled_event_id,
                activity.attempt,
            )
        )
    return keys


def disarm_activity(
    state: RunState, scheduled_event_id: int, *, include_schedule_to_close: bool
) -> list[str]:
    prefix = f"{state.run_id}/activity/{scheduled_event_id}/"
    removed = [
        key
        for key in state.armed_timers
        if key.startswith(prefix) and (include_schedule_to_close or not key.endswith("/schedule_to_close"))
    ]
    for key in removed:
        del state.armed_timers[key]
    return removed


def new_run_state(started: h.WorkflowExecutionStarted) -> RunState:
    """The state of a run that has only its started event."""
    state = RunState(
        namespace=started.namespace,
        workflow_id=started.workflow_id,
        run_id=started.run_id,
        workflow_type=started.workflow_type,
        first_run_id=started.first_run_id or started.run_id,
        start_time=started.timestamp,
        execution_timeout=started.execution_timeout,
        parent=started.parent,
        start_request_id=started.request_id,
    )
    apply_event(state, started)
    return state


def rebuild_state(history: Sequence[h.HistoryEvent]) -> RunState:
    """Fold a history into the state it implies (for resume, redrive and checks)."""
    if not history or not isinstance(history[0], h.WorkflowExecutionStarted):
        raise ValueError("a history starts with workflow_execution_started")
    h.check_contiguous(list(history))
    state = new_run_state(history[0])
    for event in history[1:]:
        apply_event(state, event)
    return state


def apply_event(state: RunState, event: h.HistoryEvent) -> None:
    """What an event does to the run's state: the one place the live state machine and a rebuild
    from history share, so the two cannot disagree."""
    state.next_event_id = event.event_id + 1
    state.history_size += len(event.model_dump_json())
    match event:
        case h.UpsertWorkflowSearchAttributes():
            state.search_attributes.update(event.attributes)
        case h.WorkflowExecutionStarted():
            if event.execution_timeout is not None:
                arm(state, "execution_timeout", event.timestamp + event.execution_timeout)
        case h.ActivityTaskScheduled():
            activity = PendingActivity(
                scheduled_event_id=event.event_id,
                seq=event.seq,
                activity_type=event.activity_type,
                input=event.input,
                options=event.options,
                scheduled_time=event.timestamp,
                attempt_dispatched_at=event.timestamp,
            )
            state.pending_activities[event.event_id] = activity
            state.seq_to_event[event.seq] = event.event_id
            if event.options.schedule_to_close_timeout is not None:
                arm(
                    state,
                    "schedule_to_close",
                    event.timestamp + event.options.schedule_to_close_timeout,
                    event.event_id,
                )
            attempt_timers(state, activity, event.timestamp)
        case h.ActivityTaskStarted():
            started_activity = state.pending_activities.get(event.scheduled_event_id)
            if started_activity is not None:
                started_activity.attempt, started_activity.phase, started_activity.started_at = (
                    event.attempt,
                    "started",
                    event.timestamp,
                )
                state.armed_timers.pop(
                    timer_key(state.run_id, "schedule_to_start", event.scheduled_event_id, event.attempt),
                    None,
                )
                timeout = started_activity.options.start_to_close_timeout
                if timeout is not None:
                    # Measured from the start from now on, no longer from the dispatch.
                    arm(
                        state,
                        "start_to_close",
                        event.timestamp + timeout,
                        event.scheduled_event_id,
                        event.attempt,
                    )
        case h.ActivityTaskRetryScheduled():
            retrying = state.pending_activities.get(event.scheduled_event_id)
            if retrying is not None:
                disarm_activity(state, event.scheduled_event_id, include_schedule_to_close=False)
                retrying.phase, retrying.last_failure = "backoff", event.failure
                retrying.attempt = event.failed_attempt + 1
                arm(
                    state,
                    "activity_retry",
                    event.timestamp + event.backoff,
                    event.scheduled_event_id,
                    retrying.attempt,
                )
        case (
            h.ActivityTaskCompleted()
            | h.ActivityTaskFailed()
            | h.ActivityTaskTimedOut()
            | h.ActivityTaskCanceled()
            | h.ActivityTaskCancelRequested()
        ):
            if state.drop_activity(event.scheduled_event_id) is not None:
                disarm_activity(state, event.scheduled_event_id, include_schedule_to_close=True)
        case h.TimerStarted():
            state.pending_timers[event.event_id] = PendingTimer(
                started_event_id=event.event_id, seq=event.seq, fire_at=event.fire_at
            )
            state.seq_to_event[event.seq] = event.event_id
            arm(state, "user_timer", event.fire_at, event.event_id)
        case h.TimerFired() | h.TimerCanceled():
            state.drop_timer(event.started_event_id)
            state.armed_timers.pop(timer_key(state.run_id, "user_timer", event.started_event_id), None)
        case h.StartChildWorkflowExecutionInitiated():
            state.pending_children[event.event_id] = PendingChild(
                initiated_event_id=event.event_id,
                seq=event.seq,
                workflow_id=event.workflow_id,
                workflow_type=event.workflow_type,
            )
            state.seq_to_event[event.seq] = event.event_id
        case h.ChildWorkflowExecutionStarted():
            child = state.pending_children.get(event.initiated_event_id)
            if child is not None:
                child.run_id = event.run_id
        case h.ChildWorkflowExecutionClosed() | h.StartChildWorkflowExecutionFailed():
            state.drop_child(event.initiated_event_id)
        case h.WorkflowExecutionSignaled():
            state.remember_request(event.request_id)
        case h.WorkflowExecutionUpdateAccepted():
            state.accepted_updates.append(
                AcceptedUpdate(
                    update_id=event.update_id, update_name=event.update_name, accepted_event_id=event.event_id
                )
            )
        case h.WorkflowExecutionUpdateCompleted():
            state.accepted_updates = [u for u in state.accepted_updates if u.update_id != event.update_id]
            state.completed_updates.append(
                CompletedUpdate(update_id=event.update_id, completed_event_id=event.event_id)
            )
            del state.completed_updates[:-MAX_REMEMBERED_UPDATES]
        case h.WorkflowExecutionCancelRequested():
            state.cancel_requested = True
            state.remember_request(event.request_id)
        case h.WorkflowTaskFailed():
            state.status, state.blocked_reason = "blocked", event.message
        case h.WorkflowTaskRedriven():
            state.status, state.blocked_reason = "running", None
        case h.WorkflowExecutionReset():
            state.reset_from_run_id, state.reset_point = event.reset_from_run_id, event.reset_point
        case _ if h.is_close_event(event):
            close(state, event)


CLOSE_STATUS: dict[type, RunStatus] = {
    h.WorkflowExecutionCompleted: "completed",
    h.WorkflowExecutionFailed: "failed",
    h.WorkflowExecutionCanceled: "canceled",
    h.WorkflowExecutionTerminated: "terminated",
    h.WorkflowExecutionTimedOut: "timed_out",
    h.WorkflowExecutionContinuedAsNew: "continued_as_new",
}


def close(state: RunState, event: h.HistoryEvent) -> None:
    state.status = CLOSE_STATUS[type(event)]
    state.close_time = event.timestamp
    state.blocked_reason = None
    if isinstance(event, h.WorkflowExecutionCompleted):
        state.result = event.result
    elif isinstance(event, h.WorkflowExecutionFailed):
        state.failure = event.failure
    elif isinstance(event, h.WorkflowExecutionContinuedAsNew | h.WorkflowExecutionTerminated):
        state.new_run_id = event.new_run_id or state.new_run_id
    state.pending_activities.clear()
    state.pending_timers.clear()
    state.armed_timers.clear()
    state.pending_children.clear()
    # Their waiters were answered by the close; a closed run takes no update.
    state.pending_updates.clear()
    state.accepted_updates.clear()
