"""What reaches a run: the inputs of the execution state machine (and, later, of the cell's topic)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from perdure.platform.core.failures import Failure
from perdure.platform.core.history import ParentRef
from perdure.platform.core.payloads import Payload


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StartWorkflow(_Message):
    kind: Literal["start"] = "start"
    request_id: str
    workflow_type: str
    workflow_id: str
    input: list[Payload] = []
    execution_timeout: timedelta | None = None
    parent: ParentRef | None = None
    first_run_id: str = ""
    continued_from_run_id: str | None = None
    # Signal-with-start: delivered right after the start, in the same workflow task.
    signal_name: str | None = None
    signal_input: list[Payload] = []


class SignalWorkflow(_Message):
    kind: Literal["signal"] = "signal"
    request_id: str
    signal_name: str
    input: list[Payload] = []


class CancelWorkflowRequest(_Message):
    kind: Literal["cancel"] = "cancel"
    request_id: str
    reason: str = ""


class TerminateWorkflowRequest(_Message):
    kind: Literal["terminate"] = "terminate"
    request_id: str
    reason: str = ""


class ActivityStarted(_Message):
    kind: Literal["activity_started"] = "activity_started"
    run_id: str
    scheduled_event_id: int
    attempt: int
    identity: str = ""


class ActivityCompleted(_Message):
    kind: Literal["activity_completed"] = "activity_completed"
    run_id: str
    scheduled_event_id: int
    attempt: int
    result: Payload | None = None


class ActivityFailed(_Message):
    kind: Literal["activity_failed"] = "activity_failed"
    run_id: str
    scheduled_event_id: int
    attempt: int
    failure: Failure


class ActivityHeartbeat(_Message):
    kind: Literal["activity_heartbeat"] = "activity_heartbeat"
    run_id: str
    scheduled_event_id: int
    attempt: int
    details: list[Payload] = []
    sequence: int = 0  # the n-th heartbeat of the attempt: its usage record's id


TimerPurpose = Literal[
    "user_timer",
    "activity_retry",
    "schedule_to_start",
    "start_to_close",
    "schedule_to_close",
    "heartbeat",
    "execution_timeout",
]


class TimerFiredNotice(_Message):
    kind: Literal["timer_fired"] = "timer_fired"
    run_id: str
    timer_key: str
    purpose: TimerPurpose
    event_id: int = 0  # the timer's started event, or the activity's scheduled event
    attempt: int = 0


class ChildStarted(_Message):
    kind: Literal["child_started"] = "child_started"
    run_id: str
    initiated_event_id: int
    child_run_id: str


class ChildStartFailed(_Message):
    kind: Literal["child_start_failed"] = "child_start_failed"
    run_id: str
    initiated_event_id: int
    cause: str


class ChildClosed(_Message):
    kind: Literal["child_closed"] = "child_closed"
    run_id: str
    initiated_event_id: int
    outcome: Literal["completed", "failed", "canceled", "terminated", "timed_out"]
    result: Payload | None = None
    failure: Failure | None = None


class RedriveRun(_Message):
    kind: Literal["redrive"] = "redrive"
    request_id: str


class QueryWorkflow(_Message):
    """A read of a run through one of its query handlers. The partition owner answers it after the
    messages before it; it is not an event, and it changes nothing."""

    kind: Literal["query"] = "query"
    request_id: str
    query_name: str
    input: list[Payload] = []


RunMessage = Annotated[
    StartWorkflow
    | SignalWorkflow
    | CancelWorkflowRequest
    | TerminateWorkflowRequest
    | ActivityStarted
    | ActivityCompleted
    | ActivityFailed
    | ActivityHeartbeat
    | TimerFiredNotice
    | ChildStarted
    | ChildStartFailed
    | ChildClosed
    | RedriveRun
    | QueryWorkflow,
    Field(discriminator="kind"),
]
