"""The worker protocol: what the platform sends a namespace's workers through its vhost, and what they
send back. Workers reach nothing else: no Kafka, no database; the namespace of everything they send is
the vhost it arrived on (their key's only vhost), never a field of the message.

- ``workflow-tasks`` (shared) and a worker's own sticky queue: ``WorkflowActivation`` (a workflow task
  and the events it carries). Queries ride on activations; a worker answers them on the asking
  client's reply queue (an ``IngressReply``), not through the platform.
- ``activities``: ``DispatchActivity`` (the activity task, as the engine's outbox holds it).
- ``worker-reports``: ``WorkerReport`` — a workflow task's commands or failure, an activity's start,
  heartbeats and outcome (a result with the commands that followed it, a *continuation*, is preceded
  by a provisional copy of the result) — which the cell's report relay hands to the run's partition.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core.outbox import DispatchActivity, DispatchWorkflowTask
from perdure.platform.protocol.vhost_layout import (
    STICKY_QUEUE_PATTERN,
    WORKER_REPORTS_QUEUE,
    WORKFLOW_TASKS_QUEUE,
)

PROTOCOL_VERSION = 1
# A report with this header set is a *provisional* copy of an activity's result, sent (transient,
# unconfirmed) before its worker goes on with the run's code; the same result follows, with the
# commands if the worker could go on. Its correlation id names the result (``result_key``). The relay
# holds it a while and hands it to the run only if the result itself does not come (the worker died
# meanwhile), so a worker that dies while running workflow code loses no completed activity.
PROVISIONAL_HEADER = "perdure-provisional"
# Commands carry payloads (activity inputs, results): bounded by what a record of the cell's topic may
# carry (Kafka's default, about 1 MB); a larger report is dead-lettered, not retried.
MAX_REPORT_BYTES = 1000 * 1000


def result_key(run_id: str, scheduled_event_id: int, attempt: int) -> str:
    """What pairs a provisional result with the result it precedes."""
    return f"{run_id}/{scheduled_event_id}/{attempt}"


class WorkflowActivation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    task: DispatchWorkflowTask
    events: list[h.HistoryEvent] = Field(default_factory=list)


ReportedMessage = Annotated[
    m.WorkflowTaskCompleted
    | m.WorkflowTaskFailed
    | m.ActivityStarted
    | m.ActivityHeartbeat
    | m.ActivityCompleted
    | m.ActivityFailed,
    Field(discriminator="kind"),
]


class WorkerReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    workflow_id: str = Field(min_length=1, max_length=400)
    message: ReportedMessage


report_adapter: TypeAdapter[WorkerReport] = TypeAdapter(WorkerReport)

__all__ = [
    "PROTOCOL_VERSION",
    "PROVISIONAL_HEADER",
    "STICKY_QUEUE_PATTERN",
    "WORKER_REPORTS_QUEUE",
    "WORKFLOW_TASKS_QUEUE",
    "DispatchActivity",
    "WorkerReport",
    "WorkflowActivation",
    "result_key",
]
