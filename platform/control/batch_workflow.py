"""``Batch``: one batch operation (terminate, cancel or signal every run a visibility query matches) over
a tenant's namespace, as a durable workflow of the system namespace (workflow id
``batch/<namespace>/<batch id>``).

It counts the matching runs (the estimate its progress is shown against), then takes them a page at a
time, newest first: an activity selects the first page after the cursor its history holds, and each
page's activity sends the operation to that page's runs through the namespace's admission
(``batch_activities.py``) and selects the page after it. Why each run is acted on and counted once
through a crash of its cell: a page is recorded (as the result of the activity that selected it) before
anything is sent to it, the requests carry ids of the batch's (sent again, they are the same request),
and a page's results are counted when its activity's result is recorded, once; a run is on one page
only, as the cursor only moves on.

Throttling: a page holds ``PAGE_SECONDS`` of runs at the batch's rate, its requests leave spread over
that time from the moment the workflow took the page up (an attempt sent again after a crash sends what
the first did not, late already, at once: a burst of at most one page), and the next page waits, on a
durable timer, until the page's share of time has passed since it began; so the rate holds across a
crash (the timer fires once the cell is back, never early). A ``stop``
signal ends the batch after the page in flight; the runs it reached stay as they are.

The history stays bounded: the workflow continues as new every ``PAGES_PER_RUN`` pages, carrying its
progress."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from perdure.platform.control.batch_activities import BatchActivities
from perdure.platform.control.control_app import control_app
from perdure.platform.control.workflow_ids import BATCH
from perdure.platform.protocol.batch_wire import (
    BatchDefinition,
    BatchProgress,
    BatchState,
    PageOutcome,
    SelectedRun,
)
from perdure.tenants import ActivityError, RetryPolicy, workflow

# A page holds this many seconds' worth of runs at the batch's rate (at least one, at most MAX_PAGE):
# its requests leave spread over that time, and what a page costs besides (an activity's round, the
# reads) is paid once per page.
PAGE_SECONDS = 2.0
MAX_PAGE = 200
# Then the workflow continues as new: a page's events carry its runs twice (selected, then acted on)
# and a signal's input, up to ~150 KB, so a run's history stays under 10 MB.
PAGES_PER_RUN = 50
APPLY_TIMEOUT = timedelta(minutes=5)
# Activities heartbeat while they run: one lost with its worker (its cell killed) is retried this soon.
HEARTBEAT_TIMEOUT = timedelta(seconds=5)
LOOK_TIMEOUT = timedelta(seconds=60)  # a count or a page of the run store
STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))
# Above every run id: the first page's cursor (the batch's start, this) leaves out only the runs that
# started after the batch began, whatever their ids.
ABOVE_EVERY_RUN_ID = "\uffff"


def page_size(rate: float) -> int:
    """Runs a page holds at ``rate`` runs a second."""
    return max(1, min(MAX_PAGE, math.floor(rate * PAGE_SECONDS)))


def pause_after(page_began: datetime, now: datetime, runs: int, rate: float) -> timedelta:
    """How long to wait after a page of ``runs`` that began at ``page_began`` before the next begins:
    what is left of the page's share of time at ``rate`` (nothing if sending it took longer)."""
    due = page_began + timedelta(seconds=runs / rate)
    return max(timedelta(0), due - now)


class BatchMemory(BaseModel):
    """What a run of the batch hands to the next when it continues as new."""

    started_at: datetime
    progress: BatchProgress
    stop_reason: str | None = None


@control_app.workflow(name=BATCH)
class Batch:
    def __init__(self) -> None:
        self.definition: BatchDefinition | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.progress = BatchProgress()
        self.state: BatchState = "running"
        self.stop_reason: str | None = None
        self.pages = 0

    @workflow.run
    async def run(self, definition: BatchDefinition, memory: BatchMemory | None = None) -> dict[str, Any]:
        self.definition = definition
        if memory is not None:
            self.started_at, self.progress = memory.started_at, memory.progress
            self.stop_reason = self.stop_reason or memory.stop_reason
        else:
            self.started_at = workflow.now()
        workflow.upsert_search_attributes(
            {
                "Namespace": definition.namespace,
                "Batch": definition.batch_id,
                "Operation": definition.operation,
                "BatchState": "running",
                "StartedAt": self.started_at.isoformat(),
            }
        )
        try:
            if self.progress.total_estimate is None:
                self.progress.total_estimate = await _look(
                    BatchActivities.count_batch_runs, definition.namespace, definition.query
                )
                self._show_progress()
            await self._work_through()
        except ActivityError as failure:
            # Only a refusal ends the batch (a query no index serves, the namespace gone): every other
            # failure is retried without end, as the batch is to finish whatever it meets.
            self.state = "failed"
            self.progress.last_error = str(failure.cause or failure)
        self.finished_at = workflow.now()
        workflow.upsert_search_attributes({"BatchState": self.state})
        return self._description()

    async def _work_through(self) -> None:
        definition = self._definition
        size = page_size(definition.rate)
        assert self.started_at is not None
        # Runs started after the batch began are not its: the walk starts at its start, newest first.
        after = self.progress.cursor or (self.started_at, ABOVE_EVERY_RUN_ID)
        page: list[SelectedRun] = await _look(
            BatchActivities.select_batch_runs,
            definition.namespace,
            definition.query,
            after[0],
            after[1],
            size,
        )
        while page:
            if self.stop_reason is not None:
                self.state = "stopped"
                return
            if self.pages >= PAGES_PER_RUN:
                workflow.continue_as_new(definition, self._memory())  # the next run selects this page again
            self.pages += 1
            began = workflow.now()
            outcome: PageOutcome = await workflow.execute_activity(
                BatchActivities.apply_batch_page,
                definition,
                workflow.info().first_run_id,
                page,
                size,
                began,
                start_to_close_timeout=APPLY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
            self.progress.record(page, outcome.results)
            self._show_progress()
            done, page = page, outcome.next_page
            pause = pause_after(began, workflow.now(), len(done), definition.rate)
            if page and pause > timedelta(0):
                try:
                    await workflow.wait_condition(lambda: self.stop_reason is not None, timeout=pause)
                except TimeoutError:
                    pass
        self.state = "completed"

    def _show_progress(self) -> None:
        progress = self.progress
        workflow.upsert_search_attributes(
            {
                "Succeeded": progress.succeeded,
                "Failed": progress.failed,
                "Skipped": progress.skipped,
                "TotalEstimate": progress.total_estimate if progress.total_estimate is not None else -1,
            }
        )

    @workflow.signal
    def stop(self, reason: Any = "") -> None:
        """End the batch after the page in flight (taken once: a second stop changes nothing)."""
        if self.stop_reason is None:
            self.stop_reason = str(reason)[:1000] if reason else "stopped"

    @workflow.query
    def describe(self) -> dict[str, Any]:
        """The batch: what it does to which runs, how fast, and how far it got."""
        return self._description()

    def _description(self) -> dict[str, Any]:
        definition, progress = self._definition, self.progress
        return {
            "batch": definition.batch_id,
            "namespace": definition.namespace,
            "operation": definition.operation,
            "query": definition.query,
            "reason": definition.reason,
            "signal": definition.signal_name or None,
            "rate": definition.rate,
            "state": self.state,
            "stop_reason": self.stop_reason,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "counts": {
                "total_estimate": progress.total_estimate,
                "succeeded": progress.succeeded,
                "failed": progress.failed,
                "skipped": progress.skipped,
            },
            "last_error": progress.last_error,
            "recent_failures": [
                {"workflow_id": f.workflow_id, "run_id": f.run_id, "detail": f.detail}
                for f in reversed(progress.recent_failures)
            ],
        }

    def _memory(self) -> BatchMemory:
        assert self.started_at is not None
        return BatchMemory(started_at=self.started_at, progress=self.progress, stop_reason=self.stop_reason)

    @property
    def _definition(self) -> BatchDefinition:
        assert self.definition is not None, "the run method sets the batch up first"
        return self.definition


def _look(activity: Any, *args: Any) -> Any:
    return workflow.execute_activity(
        activity,
        *args,
        start_to_close_timeout=LOOK_TIMEOUT,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        retry_policy=STEP_RETRY,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
