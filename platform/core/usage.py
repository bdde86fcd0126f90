"""Billable usage as the engine records it (docs/billing.md): one record per billable
action, and storage samples. Every record has a deterministic id, so a record sent again (a redelivery,
an outbox re-sent after a crash, a sample taken twice) is recognisably the same one and counted once.

Actions follow Temporal Cloud: a run started (new, child, continue-as-new), a signal (signal-with-start
is a start and a signal), a query, an update the run's code took or refused (an update sent again
under its id is the same update), an activity attempt started, a heartbeat that reached the engine, a
timer started, a side-effect marker, a search-attribute update, a reset (by the reset event of the
run it made; the history it copies and the signals it carries over were billed in the run they came
from). Storage is metered in byte-seconds
(integers: no floats anywhere near money); pricing turns them into GB-hours.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from perdure.platform.core import history as h

USAGE_VERSION = 1
ActionMetric = Literal[
    "workflow_started",
    "signal",
    "query",
    "update",
    "activity_started",
    "activity_heartbeat",
    "timer_started",
    "side_effect",
    "search_attribute_update",
    "reset",
]
StorageMetric = Literal["active_storage", "retained_storage"]
# Counted per namespace and hour like the billed metrics, never priced: a request admission held back
# because its namespace's rate was used up.
OperationalMetric = Literal["throttled_request"]
Metric = ActionMetric | StorageMetric | OperationalMetric
ACTION_METRICS: tuple[ActionMetric, ...] = (
    "workflow_started",
    "signal",
    "query",
    "update",
    "activity_started",
    "activity_heartbeat",
    "timer_started",
    "side_effect",
    "search_attribute_update",
    "reset",
)
STORAGE_METRICS: tuple[StorageMetric, ...] = ("active_storage", "retained_storage")
OPERATIONAL_METRICS: tuple[OperationalMetric, ...] = ("throttled_request",)
# The billed metrics: every one has a price in the price table.
METRICS: tuple[str, ...] = (*ACTION_METRICS, *STORAGE_METRICS)


class UsageRecord(BaseModel):
    """One line of the metering topic (key: the namespace)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    id: str = Field(min_length=1, max_length=500)
    namespace: str
    metric: Metric
    # Actions: how many (1 per record). Storage: byte-seconds.
    quantity: int = Field(ge=0)
    at: datetime  # when it happened; it is billed in the hour that holds this instant

    @property
    def hour(self) -> datetime:
        return hour_of(self.at)


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _metric_of(event: h.HistoryEvent) -> ActionMetric | None:
    match event:
        case h.WorkflowExecutionStarted():
            return "workflow_started"
        case h.WorkflowExecutionSignaled(reapplied_from_run_id=None):
            return "signal"
        case h.WorkflowExecutionUpdateAccepted():
            return "update"
        case h.ActivityTaskStarted():
            return "activity_started"
        case h.TimerStarted():
            return "timer_started"
        case h.MarkerRecorded(marker="side_effect"):
            return "side_effect"
        case h.UpsertWorkflowSearchAttributes():
            return "search_attribute_update"
        case h.WorkflowExecutionReset():
            return "reset"
    return None


def usage_of_events(namespace: str, run_id: str, events: Iterable[h.HistoryEvent]) -> list[UsageRecord]:
    """The actions recorded in a run's new events: the event's place in its run is the record's id."""
    records = []
    for event in events:
        metric = _metric_of(event)
        if metric is not None:
            records.append(
                UsageRecord(
                    id=f"{run_id}/{event.event_id}",
                    namespace=namespace,
                    metric=metric,
                    quantity=1,
                    at=event.timestamp,
                )
            )
    return records


def heartbeat_usage(
    namespace: str, run_id: str, scheduled_event_id: int, attempt: int, sequence: int, at: datetime
) -> UsageRecord:
    return UsageRecord(
        id=f"{run_id}/{scheduled_event_id}/{attempt}/heartbeat-{sequence}",
        namespace=namespace,
        metric="activity_heartbeat",
        quantity=1,
        at=at,
    )


def query_usage(namespace: str, request_id: str, at: datetime) -> UsageRecord:
    return UsageRecord(
        id=f"query/{namespace}/{request_id}", namespace=namespace, metric="query", quantity=1, at=at
    )


def update_rejection_usage(namespace: str, run_id: str, update_id: str, at: datetime) -> UsageRecord:
    """An update the run's code refused (no event records it; an accepted one is billed by its event)."""
    return UsageRecord(
        id=f"update/{run_id}/{update_id}/rejected", namespace=namespace, metric="update", quantity=1, at=at
    )


def throttled_usage(namespace: str, request_id: str, at: datetime) -> UsageRecord:
    """A request admission held back for its namespace's rate (once per request, whatever redelivery)."""
    return UsageRecord(
        id=f"throttled/{namespace}/{request_id}",
        namespace=namespace,
        metric="throttled_request",
        quantity=1,
        at=at,
    )


def storage_usage(
    namespace: str,
    metric: StorageMetric,
    cell: str,
    partition: int,
    at: datetime,
    total_bytes: int,
    span: timedelta,
) -> UsageRecord:
    """A sample of ``total_bytes`` standing for ``span``: one per (namespace, cell partition, metric,
    sampling instant), whichever process takes it."""
    return UsageRecord(
        id=f"storage/{namespace}/{cell}/{partition}/{metric}/{at.isoformat()}",
        namespace=namespace,
        metric=metric,
        quantity=total_bytes * int(span.total_seconds()),
        at=at,
    )
