"""The event history of a workflow run: the truth from which its state and its code's position follow.

Event ids are contiguous from 1. Three roles:
- *command events* record what the workflow code decided (schedule an activity, start a timer, ...);
  replay matches the code's commands against them in order;
- *activation events* are what happened to the run (a result, a signal, a timer firing, a cancel);
  replay feeds them to the code one at a time, exactly as the live run saw them;
- *informational events* (an activity attempt started, a retry scheduled, a child started) explain the
  run to people and to the state rebuild; the code never sees them.

An update's accepted event is a command event with one more role: the worker's code issued it, and
a replay that reaches it (with nothing left to match) starts the update's handler there.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from perdure.platform.core.failures import Failure, TimeoutType
from perdure.platform.core.payloads import Payload
from perdure.platform.core.retry import RetryPolicy


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: int = Field(ge=1)
    timestamp: datetime


class ParentRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    namespace: str
    workflow_id: str
    run_id: str
    initiated_event_id: int


class WorkflowExecutionStarted(_Event):
    type: Literal["workflow_execution_started"] = "workflow_execution_started"
    workflow_type: str
    workflow_id: str
    run_id: str
    namespace: str
    input: list[Payload] = []
    request_id: str = ""
    execution_timeout: timedelta | None = None
    # The first run of a chain of continue-as-new runs, and the previous one.
    first_run_id: str = ""
    continued_from_run_id: str | None = None
    parent: ParentRef | None = None
    attempt: int = 1
    # A run made by a reset copies its started event from the run it was reset from: the code's seeded
    # randomness follows the first run's id, so the copied prefix replays as it was recorded.
    original_run_id: str = ""


class ActivityOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    schedule_to_close_timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    start_to_close_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    retry_policy: RetryPolicy | None = None


class ActivityTaskScheduled(_Event):
    type: Literal["activity_task_scheduled"] = "activity_task_scheduled"
    seq: int
    activity_type: str
    input: list[Payload] = []
    options: ActivityOptions = ActivityOptions()


class ActivityTaskStarted(_Event):
    type: Literal["activity_task_started"] = "activity_task_started"
    scheduled_event_id: int
    attempt: int
    identity: str = ""


class ActivityTaskRetryScheduled(_Event):
    type: Literal["activity_task_retry_scheduled"] = "activity_task_retry_scheduled"
    scheduled_event_id: int
    failed_attempt: int
    failure: Failure
    backoff: timedelta


class ActivityTaskCompleted(_Event):
    type: Literal["activity_task_completed"] = "activity_task_completed"
    scheduled_event_id: int
    attempt: int
    result: Payload | None = None


class ActivityTaskFailed(_Event):
    type: Literal["activity_task_failed"] = "activity_task_failed"
    scheduled_event_id: int
    attempt: int
    failure: Failure


class ActivityTaskTimedOut(_Event):
    type: Literal["activity_task_timed_out"] = "activity_task_timed_out"
    scheduled_event_id: int
    attempt: int
    timeout_type: TimeoutType
    last_failure: Failure | None = None


class ActivityTaskCancelRequested(_Event):
    type: Literal["activity_task_cancel_requested"] = "activity_task_cancel_requested"
    seq: int
    scheduled_event_id: int


class ActivityTaskCanceled(_Event):
    """Informational: the activity was settled as cancelled right after the code asked to cancel it."""

    type: Literal["activity_task_canceled"] = "activity_task_canceled"
    scheduled_event_id: int


class TimerStarted(_Event):
    type: Literal["timer_started"] = "timer_started"
    seq: int
    duration: timedelta
    fire_at: datetime


class TimerFired(_Event):
    type: Literal["timer_fired"] = "timer_fired"
    started_event_id: int


class TimerCanceled(_Event):
    type: Literal["timer_canceled"] = "timer_canceled"
    seq: int
    started_event_id: int


class WorkflowExecutionSignaled(_Event):
    type: Literal["workflow_execution_signaled"] = "workflow_execution_signaled"
    signal_name: str
    input: list[Payload] = []
    request_id: str = ""
    # A signal a reset carried over from the run it was reset from (billed once, when it was sent).
    reapplied_from_run_id: str | None = None


class MarkerRecorded(_Event):
    """A side effect's value or a patch; replay returns the recorded value instead of recomputing it."""

    type: Literal["marker_recorded"] = "marker_recorded"
    seq: int
    marker: Literal["side_effect", "patch"]
    marker_id: str
    value: Payload | None = None


# What a run may be found by (and is billed for setting): JSON scalars, or lists of strings.
SearchAttributeValue = str | int | float | bool | list[str]


class UpsertWorkflowSearchAttributes(_Event):
    type: Literal["upsert_workflow_search_attributes"] = "upsert_workflow_search_attributes"
    seq: int
    attributes: dict[str, SearchAttributeValue]


class StartChildWorkflowExecutionInitiated(_Event):
    type: Literal["start_child_workflow_execution_initiated"] = "start_child_workflow_execution_initiated"
    seq: int
    workflow_type: str
    workflow_id: str
    input: list[Payload] = []
    execution_timeout: timedelta | None = None


class StartChildWorkflowExecutionFailed(_Event):
    type: Literal["start_child_workflow_execution_failed"] = "start_child_workflow_execution_failed"
    initiated_event_id: int
    cause: str


class ChildWorkflowExecutionStarted(_Event):
    type: Literal["child_workflow_execution_started"] = "child_workflow_execution_started"
    initiated_event_id: int
    run_id: str


class ChildWorkflowExecutionClosed(_Event):
    """The child's run chain ended: ``outcome`` mirrors its close event."""

    type: Literal["child_workflow_execution_closed"] = "child_workflow_execution_closed"
    initiated_event_id: int
    outcome: Literal["completed", "failed", "canceled", "terminated", "timed_out"]
    result: Payload | None = None
    failure: Failure | None = None


class RequestCancelChildWorkflowExecution(_Event):
    type: Literal["request_cancel_child_workflow_execution"] = "request_cancel_child_workflow_execution"
    seq: int
    initiated_event_id: int


WorkflowTaskFailureCause = Literal["nondeterminism", "code_error", "unknown_workflow_type"]


class WorkflowTaskFailed(_Event):
    """A worker could not advance the run (non-determinism, a crash, an unregistered type): the run is
    parked, its workflow task retried with backoff, until it succeeds (corrected code deployed) or ops
    redrive it. Recorded once per parking, not per retry.

    Commands of the activations before it were never recorded; replay carries them over to the end.
    """

    type: Literal["workflow_task_failed"] = "workflow_task_failed"
    cause: WorkflowTaskFailureCause
    message: str
    stack_trace: str = ""


class WorkflowExecutionUpdateAccepted(_Event):
    """The run's code took an update (its validator, if any, let it in) and its handler started here:
    a replay runs the handler again at this point, without the validator. Refused updates leave no
    event."""

    type: Literal["workflow_execution_update_accepted"] = "workflow_execution_update_accepted"
    update_id: str
    update_name: str
    input: list[Payload] = []


class WorkflowExecutionUpdateCompleted(_Event):
    """An update's handler returned (``result``) or raised (``failure``)."""

    type: Literal["workflow_execution_update_completed"] = "workflow_execution_update_completed"
    update_id: str
    accepted_event_id: int
    result: Payload | None = None
    failure: Failure | None = None


class WorkflowTaskRedriven(_Event):
    type: Literal["workflow_task_redriven"] = "workflow_task_redriven"
    request_id: str = ""


class WorkflowExecutionCancelRequested(_Event):
    type: Literal["workflow_execution_cancel_requested"] = "workflow_execution_cancel_requested"
    reason: str = ""
    request_id: str = ""


class WorkflowExecutionCompleted(_Event):
    type: Literal["workflow_execution_completed"] = "workflow_execution_completed"
    result: Payload | None = None


class WorkflowExecutionFailed(_Event):
    type: Literal["workflow_execution_failed"] = "workflow_execution_failed"
    failure: Failure


class WorkflowExecutionCanceled(_Event):
    type: Literal["workflow_execution_canceled"] = "workflow_execution_canceled"
    details: str = ""


class WorkflowExecutionTerminated(_Event):
    type: Literal["workflow_execution_terminated"] = "workflow_execution_terminated"
    reason: str = ""
    # Terminated by a reset: the run that goes on in its place.
    new_run_id: str | None = None


class WorkflowExecutionReset(_Event):
    """Informational, right after the history prefix a reset copied (docs/reset.md): this run goes on
    from event ``reset_point`` of run ``reset_from_run_id``; its code decides again from there. The
    ``reapplied_signals`` signals that run received later follow right after it as new signal events
    (unless the reset dropped them): the new run's first workflow task gives the code the activation at
    ``reset_point`` and then those signals, and the commands it issues for all of them follow."""

    type: Literal["workflow_execution_reset"] = "workflow_execution_reset"
    reset_from_run_id: str
    reset_point: int = Field(ge=1)
    reason: str = ""
    request_id: str = ""
    reapplied_signals: int = 0
    # The run this reset made (this event's run): its code draws new randomness from here on, seeded by
    # this id (as Temporal's SDKs reseed at a reset), so ids drawn after the point are not the old
    # run's. Empty in resets recorded before it was kept: those replay without reseeding.
    new_run_id: str = ""


class WorkflowExecutionTimedOut(_Event):
    type: Literal["workflow_execution_timed_out"] = "workflow_execution_timed_out"


class WorkflowExecutionContinuedAsNew(_Event):
    type: Literal["workflow_execution_continued_as_new"] = "workflow_execution_continued_as_new"
    new_run_id: str
    workflow_type: str
    input: list[Payload] = []
    execution_timeout: timedelta | None = None


HistoryEvent = Annotated[
    WorkflowExecutionStarted
    | ActivityTaskScheduled
    | ActivityTaskStarted
    | ActivityTaskRetryScheduled
    | ActivityTaskCompleted
    | ActivityTaskFailed
    | ActivityTaskTimedOut
    | ActivityTaskCancelRequested
    | ActivityTaskCanceled
    | TimerStarted
    | TimerFired
    | TimerCanceled
    | WorkflowExecutionSignaled
    | MarkerRecorded
    | UpsertWorkflowSearchAttributes
    | StartChildWorkflowExecutionInitiated
    | StartChildWorkflowExecutionFailed
    | ChildWorkflowExecutionStarted
    | ChildWorkflowExecutionClosed
    | RequestCancelChildWorkflowExecution
    | WorkflowExecutionUpdateAccepted
    | WorkflowExecutionUpdateCompleted
    | WorkflowTaskFailed
    | WorkflowTaskRedriven
    | WorkflowExecutionCancelRequested
    | WorkflowExecutionCompleted
    | WorkflowExecutionFailed
    | WorkflowExecutionCanceled
    | WorkflowExecutionTerminated
    | WorkflowExecutionTimedOut
    | WorkflowExecutionContinuedAsNew
    | WorkflowExecutionReset,
    Field(discriminator="type"),
]

CLOSE_EVENTS = (
    WorkflowExecutionCompleted,
    WorkflowExecutionFailed,
    WorkflowExecutionCanceled,
    WorkflowExecutionTerminated,
    WorkflowExecutionTimedOut,
    WorkflowExecutionContinuedAsNew,
)
COMMAND_EVENTS = (
    ActivityTaskScheduled,
    ActivityTaskCancelRequested,
    TimerStarted,
    TimerCanceled,
    MarkerRecorded,
    UpsertWorkflowSearchAttributes,
    StartChildWorkflowExecutionInitiated,
    RequestCancelChildWorkflowExecution,
    WorkflowExecutionUpdateAccepted,
    WorkflowExecutionUpdateCompleted,
    WorkflowExecutionCompleted,
    WorkflowExecutionFailed,
    WorkflowExecutionCanceled,
    WorkflowExecutionContinuedAsNew,
)
ACTIVATION_EVENTS = (
    ActivityTaskCompleted,
    ActivityTaskFailed,
    ActivityTaskTimedOut,
    TimerFired,
    WorkflowExecutionSignaled,
    StartChildWorkflowExecutionFailed,
    ChildWorkflowExecutionClosed,
    WorkflowExecutionCancelRequested,
)

_history_adapter: TypeAdapter[list[HistoryEvent]] = TypeAdapter(list[HistoryEvent])
_event_adapter: TypeAdapter[HistoryEvent] = TypeAdapter(HistoryEvent)


def is_close_event(event: Any) -> bool:
    return isinstance(event, CLOSE_EVENTS)


def history_to_json(events: list[HistoryEvent]) -> list[dict[str, Any]]:
    dumped: list[dict[str, Any]] = _history_adapter.dump_python(events, mode="json")
    return dumped


def history_from_json(data: Any) -> list[HistoryEvent]:
    """Validate a history (e.g. loaded from a file); raises ``ValueError`` if ids are not contiguous."""
    events = _history_adapter.validate_python(data)
    check_contiguous(events)
    return events


def event_from_json(data: Any) -> HistoryEvent:
    return _event_adapter.validate_python(data)


def check_contiguous(events: list[HistoryEvent], first: int = 1) -> None:
    for offset, event in enumerate(events):
        if event.event_id != first + offset:
            raise ValueError(
                f"event ids must be contiguous from {first}: found {event.event_id} at {offset + 1}"
            )
