"""What reaches a run: the inputs of the execution state machine (and, later, of the cell's topic)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from perdure.platform.core.commands import WireCommand
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
    # Set by a reset only (never from a request): the run whose signal this is, carried over.
    reapplied_from_run_id: str | None = None


class CancelWorkflowRequest(_Message):
    kind: Literal["cancel"] = "cancel"
    request_id: str
    reason: str = ""
    # Set by a parent cancelling its child: the request is for the child run it started and the runs that
    # go on from it (continue-as-new, reset) only, see ``outbox.CancelRun``.
    first_run_id: str | None = None

    @model_serializer(mode="wrap")
    def _without_no_first_run(self, serialize: SerializerFunctionWrapHandler) -> Any:
        return _without_none(serialize(self), "first_run_id")


class TerminateWorkflowRequest(_Message):
    kind: Literal["terminate"] = "terminate"
    request_id: str
    reason: str = ""
    # Set by a parent closing with its child open (parent close policy), as for a cancel.
    first_run_id: str | None = None

    @model_serializer(mode="wrap")
    def _without_no_first_run(self, serialize: SerializerFunctionWrapHandler) -> Any:
        return _without_none(serialize(self), "first_run_id")


def _without_none(data: Any, field: str) -> Any:
    """Without a field that is not set, a message reads as before it existed, for an engine of an
    earlier version (which refuses fields it does not know)."""
    if isinstance(data, dict) and data.get(field, "") is None:
        data.pop(field)
    return data


ResetPointName = Literal["first-workflow-task", "last-workflow-task"]


class ResetWorkflow(_Message):
    """Start the workflow again from a point of a run's history (docs/reset.md): a new run of the same
    workflow id replays the run's events up to ``to`` and goes on live from there; the run, if open,
    is terminated with a pointer to it. ``request_id`` names the reset for good: sent again, it makes
    no second run. Answered by the partition's owner (the new run id, or why it was refused)."""

    kind: Literal["reset"] = "reset"
    request_id: str = Field(min_length=1, max_length=200)
    to: int | ResetPointName
    reason: str = Field(default="", max_length=1000)
    reapply_signals: bool = True


class ActivityStarted(_Message):
    kind: Literal["activity_started"] = "activity_started"
    run_id: str
    scheduled_event_id: int
    attempt: int
    identity: str = ""


class Continuation(_Message):
    """What the worker that completed an activity, and holds the run's instance, did next with it: it
    took the events the engine records for its last commands and for this result as given (ids
    ``first_event_id`` to ``last_event_id``, the result at ``completed_at``), advanced the instance
    through them and issued ``commands``. The engine records them as the workflow task that result
    would have caused, when its history is what the worker took it to be; else it sends that task as
    usual (docs/architecture.md, "Continuations")."""

    first_event_id: int = Field(ge=1)
    last_event_id: int = Field(ge=1)
    completed_at: datetime
    commands: list[WireCommand] = Field(default_factory=list, max_length=10_000)
    sticky_queue: str = Field(max_length=200)


class ActivityCompleted(_Message):
    kind: Literal["activity_completed"] = "activity_completed"
    run_id: str
    scheduled_event_id: int
    attempt: int
    result: Payload | None = None
    continuation: Continuation | None = None


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
    "workflow_task_timeout",
    "workflow_task_retry",
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


class PendingQuery(_Message):
    """A query on its way to the worker that answers it, with where the answer goes (the asking
    client's reply queue in the namespace's vhost, and its correlation id)."""

    request_id: str
    query_name: str
    input: list[Payload] = []
    reply_to: str | None = None
    correlation_id: str | None = None


UpdateStage = Literal["accepted", "completed"]


class UpdateWorkflow(_Message):
    """A request to run one of a run's update handlers. Its ``update_id`` (the client's choice) names
    the update for good: the same id sent again joins the update in progress or is answered with its
    outcome. Like a query it is no event by itself: the run keeps it until its code takes it (an
    accepted event) or refuses it (nothing recorded)."""

    kind: Literal["update"] = "update"
    update_id: str = Field(min_length=1, max_length=200)
    update_name: str = Field(min_length=1, max_length=200)
    input: list[Payload] = []
    # What the sender waits for: the update taken (``start_update``), or its handler's outcome.
    wait_for: UpdateStage = "completed"


class UpdateWaiter(_Message):
    """Who waits for an update's answer: a client's reply queue in the namespace's vhost and the
    correlation id of its request."""

    reply_to: str = Field(min_length=1, max_length=255)
    correlation_id: str | None = Field(default=None, max_length=255)
    wait_for: UpdateStage = "completed"


class UpdateInput(_Message):
    """An update on its way to the run's code, with the workflow task that carries it."""

    update_id: str
    update_name: str
    input: list[Payload] = []


class UpdateRejection(_Message):
    """An update the run's code refused (its validator raised, or it has no handler of that name):
    reported with the workflow task's commands, recorded nowhere."""

    update_id: str = Field(min_length=1, max_length=200)
    failure: Failure


WorkflowTaskFailureCause = Literal["nondeterminism", "code_error", "unknown_workflow_type", "cache_miss"]


class WorkflowTaskCompleted(_Message):
    """A worker advanced the run's code through a workflow task: the commands it issued, in order, the
    updates of the task it refused, and the queue on which it keeps the run's instance for the next
    task (sticky), if it keeps it."""

    kind: Literal["workflow_task_completed"] = "workflow_task_completed"
    run_id: str
    task_id: str
    commands: list[WireCommand] = Field(default_factory=list, max_length=10_000)
    update_rejections: list[UpdateRejection] = Field(default_factory=list, max_length=1_000)
    sticky_queue: str | None = Field(default=None, max_length=200)
    identity: str = Field(default="", max_length=200)

    @model_serializer(mode="wrap")
    def _without_no_rejections(self, serialize: SerializerFunctionWrapHandler) -> Any:
        # Without refusals it reads as before updates existed, for a relay of an earlier version.
        data = serialize(self)
        if not self.update_rejections and isinstance(data, dict):
            data.pop("update_rejections", None)
        return data


class WorkflowTaskFailed(_Message):
    """A worker could not advance the run: its code does not replay the history, crashed, or is not
    registered; or (``cache_miss``) the worker no longer holds the instance a sticky task was sent to,
    and the task (or the queries of a query-only task, echoed back) must go out with the whole history."""

    kind: Literal["workflow_task_failed"] = "workflow_task_failed"
    run_id: str
    task_id: str = ""  # empty for a query-only task
    cause: WorkflowTaskFailureCause
    message: str = Field(default="", max_length=20_000)
    stack_trace: str = Field(default="", max_length=20_000)
    queries: list[PendingQuery] = Field(default_factory=list, max_length=1_000)
    identity: str = Field(default="", max_length=200)


RunMessage = Annotated[
    StartWorkflow
    | SignalWorkflow
    | CancelWorkflowRequest
    | TerminateWorkflowRequest
    | ResetWorkflow
    | ActivityStarted
    | ActivityCompleted
    | ActivityFailed
    | ActivityHeartbeat
    | TimerFiredNotice
    | ChildStarted
    | ChildStartFailed
    | ChildClosed
    | RedriveRun
    | QueryWorkflow
    | UpdateWorkflow
    | WorkflowTaskCompleted
    | WorkflowTaskFailed,
    Field(discriminator="kind"),
]
