"""Commands the workflow code issues; each becomes exactly one command event in the history."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from perdure.platform.core import history as h
from perdure.platform.core.failures import Failure
from perdure.platform.core.payloads import Payload


class _Command(BaseModel, ABC):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @abstractmethod
    def describe(self) -> str:
        """How the command reads in a non-determinism error."""

    @abstractmethod
    def matches(self, event: Any) -> bool:
        """Whether ``event`` records this command."""


class ScheduleActivity(_Command):
    kind: Literal["schedule_activity"] = "schedule_activity"
    seq: int
    activity_type: str
    input: list[Payload]
    options: h.ActivityOptions

    def describe(self) -> str:
        return f"schedule activity {self.activity_type!r}"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.ActivityTaskScheduled) and event.activity_type == self.activity_type


class RequestCancelActivity(_Command):
    kind: Literal["request_cancel_activity"] = "request_cancel_activity"
    activity_seq: int

    def describe(self) -> str:
        return f"cancel activity #{self.activity_seq}"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.ActivityTaskCancelRequested) and event.seq == self.activity_seq


class StartTimer(_Command):
    kind: Literal["start_timer"] = "start_timer"
    seq: int
    duration: timedelta

    def describe(self) -> str:
        return f"start timer of {self.duration}"

    def matches(self, event: Any) -> bool:
        # The duration may legitimately be computed from workflow.now(); only the kind must agree.
        return isinstance(event, h.TimerStarted)


class CancelTimer(_Command):
    kind: Literal["cancel_timer"] = "cancel_timer"
    timer_seq: int

    def describe(self) -> str:
        return f"cancel timer #{self.timer_seq}"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.TimerCanceled) and event.seq == self.timer_seq


class RecordMarker(_Command):
    kind: Literal["record_marker"] = "record_marker"
    seq: int
    marker: str
    marker_id: str
    value: Payload | None = None

    def describe(self) -> str:
        return f"{self.marker} marker {self.marker_id!r}"

    def matches(self, event: Any) -> bool:
        return (
            isinstance(event, h.MarkerRecorded)
            and event.marker == self.marker
            and event.marker_id == self.marker_id
        )


class UpsertSearchAttributes(_Command):
    kind: Literal["upsert_search_attributes"] = "upsert_search_attributes"
    seq: int
    attributes: dict[str, h.SearchAttributeValue]

    def describe(self) -> str:
        return f"upsert search attributes {sorted(self.attributes)}"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.UpsertWorkflowSearchAttributes) and event.attributes == self.attributes


class StartChildWorkflow(_Command):
    kind: Literal["start_child_workflow"] = "start_child_workflow"
    seq: int
    workflow_type: str
    workflow_id: str
    input: list[Payload]
    execution_timeout: timedelta | None = None

    def describe(self) -> str:
        return f"start child workflow {self.workflow_type!r} id {self.workflow_id!r}"

    def matches(self, event: Any) -> bool:
        return (
            isinstance(event, h.StartChildWorkflowExecutionInitiated)
            and event.workflow_type == self.workflow_type
            and event.workflow_id == self.workflow_id
        )


class RequestCancelChild(_Command):
    kind: Literal["request_cancel_child"] = "request_cancel_child"
    child_seq: int

    def describe(self) -> str:
        return f"cancel child workflow #{self.child_seq}"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.RequestCancelChildWorkflowExecution) and event.seq == self.child_seq


class AcceptUpdate(_Command):
    """The code takes an update it was given with its workflow task (its validator let it in): recorded
    as the update's accepted event (with the input the engine kept), after which its handler runs. A
    refused update is no command: it is reported beside the commands (``UpdateRejection``)."""

    kind: Literal["accept_update"] = "accept_update"
    update_id: str = Field(min_length=1, max_length=200)
    update_name: str = Field(min_length=1, max_length=200)

    def describe(self) -> str:
        return f"accept update {self.update_name!r} id {self.update_id!r}"

    def matches(self, event: Any) -> bool:
        return (
            isinstance(event, h.WorkflowExecutionUpdateAccepted)
            and event.update_id == self.update_id
            and event.update_name == self.update_name
        )


class CompleteUpdate(_Command):
    """An accepted update's handler returned (``result``) or raised a failure (``failure``)."""

    kind: Literal["complete_update"] = "complete_update"
    update_id: str = Field(min_length=1, max_length=200)
    result: Payload | None = None
    failure: Failure | None = None

    def describe(self) -> str:
        return f"complete update id {self.update_id!r}"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.WorkflowExecutionUpdateCompleted) and event.update_id == self.update_id


class CompleteWorkflow(_Command):
    kind: Literal["complete_workflow"] = "complete_workflow"
    result: Payload | None

    def describe(self) -> str:
        return "complete the workflow"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.WorkflowExecutionCompleted)


class FailWorkflow(_Command):
    kind: Literal["fail_workflow"] = "fail_workflow"
    failure: Failure

    def describe(self) -> str:
        return f"fail the workflow ({self.failure.type}: {self.failure.message})"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.WorkflowExecutionFailed)


class CancelWorkflow(_Command):
    kind: Literal["cancel_workflow"] = "cancel_workflow"

    def describe(self) -> str:
        return "close the workflow as cancelled"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.WorkflowExecutionCanceled)


class ContinueAsNew(_Command):
    kind: Literal["continue_as_new"] = "continue_as_new"
    workflow_type: str
    input: list[Payload]
    execution_timeout: timedelta | None = None

    def describe(self) -> str:
        return f"continue as new ({self.workflow_type!r})"

    def matches(self, event: Any) -> bool:
        return isinstance(event, h.WorkflowExecutionContinuedAsNew)


Command = (
    ScheduleActivity
    | RequestCancelActivity
    | StartTimer
    | CancelTimer
    | RecordMarker
    | UpsertSearchAttributes
    | StartChildWorkflow
    | RequestCancelChild
    | AcceptUpdate
    | CompleteUpdate
    | CompleteWorkflow
    | FailWorkflow
    | CancelWorkflow
    | ContinueAsNew
)
# Commands as they travel from a worker to the engine, told apart by their kind.
WireCommand = Annotated[Command, Field(discriminator="kind")]
CLOSE_COMMANDS = (CompleteWorkflow, FailWorkflow, CancelWorkflow, ContinueAsNew)


def describe_event(event: Any) -> str:
    """A short description of a command event, phrased like ``Command.describe``."""
    match event:
        case h.ActivityTaskScheduled():
            return f"schedule activity {event.activity_type!r} (event {event.event_id})"
        case h.TimerStarted():
            return f"start timer of {event.duration} (event {event.event_id})"
        case h.MarkerRecorded():
            return f"{event.marker} marker {event.marker_id!r} (event {event.event_id})"
        case h.UpsertWorkflowSearchAttributes():
            return f"upsert search attributes {sorted(event.attributes)} (event {event.event_id})"
        case h.StartChildWorkflowExecutionInitiated():
            child = f"{event.workflow_type!r} id {event.workflow_id!r}"
            return f"start child workflow {child} (event {event.event_id})"
        case h.WorkflowExecutionUpdateAccepted():
            update = f"{event.update_name!r} id {event.update_id!r}"
            return f"accept update {update} (event {event.event_id})"
        case h.WorkflowExecutionUpdateCompleted():
            return f"complete update id {event.update_id!r} (event {event.event_id})"
        case _:
            return f"{event.type} (event {event.event_id})"
