"""The tenant ingress protocol: what a tenant app sends to its namespace's ``ingress`` queue, and what
admission answers on the request's ``reply_to`` queue (matched by ``correlation_id``).

The namespace is never part of a request: it is the vhost the message arrived on, which only the
namespace's own credentials can reach (invariant 7 of docs/architecture.md). A ``namespace`` field in
a body is ignored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from perdure.platform.core.failures import Failure
from perdure.platform.core.messages import ResetPointName, UpdateStage
from perdure.platform.core.outbox import UpdateReply
from perdure.platform.core.payloads import Payload
from perdure.platform.core.start_rules import IdReusePolicy
from perdure.platform.core.visibility_query import MAX_QUERY_CHARS

PROTOCOL_VERSION = "1"
# The platform's canary: a workflow type every namespace accepts besides its app's own (the hosted
# worker runs it), started to show that a namespace's whole path works.
CANARY_WORKFLOW = "PerdureCanary"


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SignalSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    input: list[Payload] = Field(default_factory=list)


class StartRequest(_Request):
    kind: Literal["start"] = "start"
    request_id: str = Field(min_length=1, max_length=200)
    workflow_type: str = Field(min_length=1, max_length=200)
    workflow_id: str = Field(min_length=1, max_length=400)
    input: list[Payload] = Field(default_factory=list)
    id_reuse_policy: IdReusePolicy = "allow_duplicate"
    execution_timeout: timedelta | None = None
    signal: SignalSpec | None = None  # signal-with-start: delivered to the running run, or to a new one


class SignalRequest(_Request):
    kind: Literal["signal"] = "signal"
    request_id: str = Field(min_length=1, max_length=200)
    workflow_id: str = Field(min_length=1, max_length=400)
    run_id: str | None = None
    signal: SignalSpec


class CancelRequest(_Request):
    kind: Literal["cancel"] = "cancel"
    request_id: str = Field(min_length=1, max_length=200)
    workflow_id: str = Field(min_length=1, max_length=400)
    run_id: str | None = None
    reason: str = ""
    terminate: bool = False


class QueryRequest(_Request):
    """Answered by the partition owner of the workflow, from the run's live state, once the messages
    admitted before it have been applied (a query after a signal sees the signal)."""

    kind: Literal["query"] = "query"
    request_id: str = Field(min_length=1, max_length=200)
    workflow_id: str = Field(min_length=1, max_length=400)
    run_id: str | None = None
    query_name: str = Field(min_length=1, max_length=200)
    input: list[Payload] = Field(default_factory=list)


class UpdateRequest(_Request):
    """Run one of a run's update handlers. ``request_id`` is the update's id: the same id sent again (a
    retry, another caller) is the same update, run once. Answered by the partition's owner on the
    request's ``reply_to`` once the update is taken (``wait_for="accepted"``) or its handler finished,
    or when it is refused."""

    kind: Literal["update"] = "update"
    request_id: str = Field(min_length=1, max_length=200)
    workflow_id: str = Field(min_length=1, max_length=400)
    run_id: str | None = None
    update_name: str = Field(min_length=1, max_length=200)
    input: list[Payload] = Field(default_factory=list)
    wait_for: UpdateStage = "completed"


class DescribeRequest(_Request):
    kind: Literal["describe"] = "describe"
    workflow_id: str = Field(min_length=1, max_length=400)
    run_id: str | None = Field(default=None, max_length=200)  # a run of the workflow; else its latest


class ResetRequest(_Request):
    """Reset a run of the workflow (its latest, or ``run_id``) to a point of its history: a new run
    goes on from there (docs/reset.md). ``to`` is an event id, ``first-workflow-task`` or
    ``last-workflow-task``. ``request_id`` names the reset: sent again, it makes no second run.
    Answered by the partition's owner with the new run's id, or why it was refused."""

    kind: Literal["reset"] = "reset"
    request_id: str = Field(min_length=1, max_length=200)
    workflow_id: str = Field(min_length=1, max_length=400)
    run_id: str | None = Field(default=None, max_length=200)
    to: int | ResetPointName
    reason: str = Field(default="", max_length=1000)
    reapply_signals: bool = True


ScheduleAction = Literal["create", "describe", "list", "pause", "unpause", "trigger", "backfill", "delete"]


class ScheduleCommand(_Request):
    """A request about the namespace's schedules, carried out by the control plane, where schedules run
    (docs/schedules.md). ``definition`` is a ``ScheduleDefinition`` without its namespace (the vhost's
    is put in: a namespace in it is ignored); ``request`` the body of a pause, unpause, trigger,
    backfill or delete. ``request_id`` makes a retry the same request: a create sent again creates one
    schedule, a pause sent again pauses once."""

    kind: Literal["schedule"] = "schedule"
    request_id: str = Field(min_length=1, max_length=200)
    action: ScheduleAction
    schedule_id: str = Field(default="", max_length=200)
    definition: dict[str, Any] | None = None
    request: dict[str, Any] | None = None


BatchAction = Literal["start", "describe", "list", "stop"]


class BatchCommand(_Request):
    """A request about the namespace's batch operations, carried out by the control plane, where batches
    run (docs/batch.md). ``definition`` is a ``BatchDefinition`` without its namespace (the vhost's is
    put in). ``request_id`` makes a retry the same request: a start sent again starts one batch."""

    kind: Literal["batch"] = "batch"
    request_id: str = Field(min_length=1, max_length=200)
    action: BatchAction
    batch_id: str = Field(default="", max_length=200)
    definition: dict[str, Any] | None = None
    reason: str = Field(default="", max_length=1000)  # a stop's


# What admission hands to the control plane rather than to a partition.
ControlCommand = ScheduleCommand | BatchCommand


class ListRequest(_Request):
    """The namespace's runs, newest first: by status and type, or by a visibility ``query``
    (docs/visibility.md), a page at a time (``page_token``: the previous answer's ``next_page_token``)."""

    kind: Literal["list"] = "list"
    status: str | None = None
    workflow_type: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    query: str | None = Field(default=None, max_length=MAX_QUERY_CHARS)
    page_token: str | None = Field(default=None, max_length=1000)


class CountRequest(_Request):
    """How many of the namespace's runs a visibility query matches (answered in ``count``)."""

    kind: Literal["count"] = "count"
    query: str = Field(default="", max_length=MAX_QUERY_CHARS)


IngressRequest = Annotated[
    StartRequest
    | SignalRequest
    | CancelRequest
    | QueryRequest
    | UpdateRequest
    | DescribeRequest
    | ListRequest
    | CountRequest
    | ScheduleCommand
    | BatchCommand
    | ResetRequest,
    Field(discriminator="kind"),
]
request_adapter: TypeAdapter[IngressRequest] = TypeAdapter(IngressRequest)

ErrorType = Literal[
    "malformed",
    "payload_too_large",
    "unknown_workflow_type",
    "already_started",
    "quota_exceeded",
    "not_found",
    "query_failed",
    "namespace_suspended",
    "update_rejected",
    "update_failed",
    "unavailable",
    "reset_refused",
]


class IngressError(BaseModel):
    type: ErrorType
    message: str
    size: int | None = None  # payload_too_large: what came, and what the namespace allows
    limit: int | None = None
    known: list[str] | None = None  # unknown_workflow_type: the types the namespace's app registers
    failure_type: str | None = None  # query_failed: the error's type, as the handler raised it
    failure: Failure | None = None  # update_rejected, update_failed: why, as the run recorded or said
    run_status: str | None = None  # not_found of an update: the status of the run that did not take it


class IngressReply(BaseModel):
    ok: bool
    error: IngressError | None = None
    run_id: str | None = None  # of the run a start created (or had created, for a retried request)
    description: dict[str, Any] | None = None
    runs: list[dict[str, Any]] | None = None
    next_page_token: str | None = None  # of a list by query with more runs to show
    count: int | None = None  # of a count request
    result: Payload | None = None  # a query's answer, or an update's handler's result
    update_stage: UpdateStage | None = None  # how far an update got, when it is answered
    schedule: dict[str, Any] | None = None  # a schedule's description
    schedules: list[dict[str, Any]] | None = None  # the namespace's schedules
    outcome: str | None = None  # what became of a schedule request (``paused``, ``started <id>``)
    batch: dict[str, Any] | None = None  # a batch's description (a start's: its id and runs matched)
    batches: list[dict[str, Any]] | None = None  # the namespace's batches

    @classmethod
    def failed(cls, error_type: ErrorType, message: str, **details: Any) -> IngressReply:
        return cls(ok=False, error=IngressError(type=error_type, message=message, **details))

    @classmethod
    def of_update(cls, answer: UpdateReply) -> IngressReply:
        """What the engine's answer to an update's waiters says on the wire."""
        match answer.outcome:
            case "accepted":
                return cls(ok=True, update_stage="accepted")
            case "completed":
                return cls(ok=True, update_stage="completed", result=answer.result)
            case "rejected" | "failed":
                failure = answer.failure
                return cls.failed(
                    "update_rejected" if answer.outcome == "rejected" else "update_failed",
                    failure.message if failure is not None else f"update {answer.update_id} {answer.outcome}",
                    failure=failure,
                )
        return cls.failed("not_found", answer.message, run_status=answer.run_status)
