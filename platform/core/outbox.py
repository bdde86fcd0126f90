"""Side effects a transition asks for; recorded with the history write and sent after it (invariant 4
of docs/architecture.md)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from perdure.platform.core.failures import Failure
from perdure.platform.core.history import ActivityOptions, ParentRef
from perdure.platform.core.messages import (
    CancelWorkflowRequest,
    ChildClosed,
    PendingQuery,
    StartWorkflow,
    TerminateWorkflowRequest,
    TimerFiredNotice,
    UpdateInput,
    UpdateWaiter,
)
from perdure.platform.core.payloads import Payload
from perdure.platform.core.usage import UsageRecord


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DispatchActivity(_Entry):
    kind: Literal["dispatch_activity"] = "dispatch_activity"
    namespace: str
    workflow_id: str
    workflow_type: str
    run_id: str
    scheduled_event_id: int
    attempt: int
    activity_type: str
    input: list[Payload]
    options: ActivityOptions
    scheduled_time: datetime
    heartbeat_details: list[Payload] = []


class DispatchWorkflowTask(_Entry):
    """A workflow task for the namespace's workers: the events ``first_event_id``..``last_event_id`` of
    the run (the whole history when ``first_event_id`` is 1, else what the sticky worker has not seen),
    queries to answer once they are applied, and updates for the code to take or refuse after them. A
    query-only task has no ``task_id`` (it expects no completion) and may carry no events at all."""

    kind: Literal["dispatch_workflow_task"] = "dispatch_workflow_task"
    namespace: str
    workflow_id: str
    workflow_type: str
    run_id: str
    task_id: str = ""
    sticky_queue: str | None = None
    first_event_id: int
    last_event_id: int
    queries: list[PendingQuery] = []
    updates: list[UpdateInput] = []
    timeout_seconds: float = 10.0

    @property
    def whole_history(self) -> bool:
        return self.first_event_id == 1

    @model_serializer(mode="wrap")
    def _without_no_updates(self, serialize: SerializerFunctionWrapHandler) -> Any:
        # A task without updates reads as before they existed: workers of an earlier version (which
        # refuse fields they do not know) still take the tasks of runs that are sent no update.
        data = serialize(self)
        if not self.updates and isinstance(data, dict):
            data.pop("updates", None)
        return data


class CancelActivityTask(_Entry):
    """Best effort: tells executors the activity's result is no longer wanted."""

    kind: Literal["cancel_activity"] = "cancel_activity"
    run_id: str
    scheduled_event_id: int


class CreateTimer(_Entry):
    kind: Literal["create_timer"] = "create_timer"
    timer_key: str
    fire_at: datetime
    notice: TimerFiredNotice


class CancelTimerEntry(_Entry):
    kind: Literal["cancel_timer"] = "cancel_timer"
    timer_key: str


class StartRun(_Entry):
    """Start a run of another execution: a child, or the next run after continue-as-new."""

    kind: Literal["start_run"] = "start_run"
    namespace: str
    start: StartWorkflow
    run_id: str | None = None  # preassigned for continue-as-new


class CancelRun(_Entry):
    """Cancel (or terminate) a parent's child. ``first_run_id`` is the run the parent started (the
    child's run id as the parent knows it): the request reaches the workflow id's latest run, which
    applies it only if it goes on from that run (its ``first_run_id``: the same run, or one it continued
    as new or was reset into). A later, unrelated run of the same id (the child a reset parent started
    again, a run someone else started) ignores it, whichever arrives first (as Temporal's
    ``FirstExecutionRunId``)."""

    kind: Literal["cancel_run"] = "cancel_run"
    namespace: str
    workflow_id: str
    request_id: str
    terminate: bool = False
    reason: str = ""
    first_run_id: str | None = None

    def request(self) -> CancelWorkflowRequest | TerminateWorkflowRequest:
        """The message the child's partition applies."""
        if self.terminate:
            return TerminateWorkflowRequest(
                request_id=self.request_id, reason=self.reason, first_run_id=self.first_run_id
            )
        return CancelWorkflowRequest(
            request_id=self.request_id, reason=self.reason, first_run_id=self.first_run_id
        )


class NotifyParent(_Entry):
    kind: Literal["notify_parent"] = "notify_parent"
    parent: ParentRef
    child_workflow_id: str
    message: ChildClosed


class RunClosed(_Entry):
    """For clients awaiting the result, and for visibility."""

    kind: Literal["run_closed"] = "run_closed"
    namespace: str
    workflow_id: str
    run_id: str
    status: str
    result: Payload | None = None
    failure: Failure | None = None
    new_run_id: str | None = None

    @property
    def routing_key(self) -> str:
        return close_routing_key(self.workflow_id)


UpdateOutcome = Literal["accepted", "completed", "failed", "rejected", "run_closed"]


class UpdateReply(_Entry):
    """An answer to those who wait for an update (``waiters``): it was taken (``accepted``), its handler
    returned (``completed``, with ``result``) or raised (``failed``, with ``failure``, also when the run
    closed before the handler finished), the run refused it (``rejected``, with ``failure``), or the run
    closed before taking it (``run_closed``: ``message`` and ``run_status`` say how)."""

    kind: Literal["update_reply"] = "update_reply"
    namespace: str
    workflow_id: str
    run_id: str
    update_id: str
    waiters: list[UpdateWaiter]
    outcome: UpdateOutcome
    result: Payload | None = None
    failure: Failure | None = None
    message: str = ""
    run_status: str | None = None


class RecordUsage(_Entry):
    """The billable actions of a transition, for the metering topic (sent again after a crash like any
    outbox entry: their ids make the copies recognisable)."""

    kind: Literal["record_usage"] = "record_usage"
    records: list[UsageRecord]


def close_routing_key(workflow_id: str) -> str:
    """Where a run's close is published on its namespace's ``results`` topic exchange. The id is hashed:
    a workflow id may hold ``.``, ``*`` or ``#`` (words and wildcards to a topic exchange) and be longer
    than a routing key may be; ``closed.#`` still follows every close."""
    return "closed." + hashlib.sha256(workflow_id.encode()).hexdigest()


OutboxEntry = Annotated[
    DispatchActivity
    | DispatchWorkflowTask
    | CancelActivityTask
    | CreateTimer
    | CancelTimerEntry
    | StartRun
    | CancelRun
    | NotifyParent
    | RunClosed
    | UpdateReply
    | RecordUsage,
    Field(discriminator="kind"),
]
