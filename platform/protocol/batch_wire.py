"""What starts a batch operation and what it reports: the ``Batch`` workflow's input (sent by ``perdure
workflow batch ...``, and by whichever path a tenant's client takes), the runs one page selects, what
became of each, and the progress the batch keeps. Checked where they are made and again where they are
read."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from perdure.platform.core.visibility_query import MAX_QUERY_CHARS

BatchOperation = Literal["terminate", "cancel", "signal"]
RunOutcome = Literal["succeeded", "failed", "skipped"]
BatchState = Literal["running", "completed", "stopped", "failed"]
OPERATIONS: tuple[BatchOperation, ...] = ("terminate", "cancel", "signal")
# Runs a second, when none is asked for; and the most a batch may ask for (admission's own rate limit
# of the namespace still applies underneath: a batch cannot outrun the namespace's quota).
DEFAULT_RATE = 50.0
MAX_RATE = 1000.0
MIN_RATE = 0.01  # one run every 100 s
# Printable, no spaces: it names the batch's workflow and begins every request id the batch sends.
_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,119}")
FAILURES_KEPT = 10
# A batch signal's input at most (and at most the namespace's payload limit): every page's activity
# carries it in the batch's history.
MAX_SIGNAL_INPUT_BYTES = 64 * 1024


class BatchDefinition(BaseModel):
    """A batch as started: which runs (``query``, in the visibility query language, kept as text and
    parsed against the namespace's search attributes when the batch reads a page), what to do to each,
    and how fast. It does not change afterwards."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    namespace: str = Field(min_length=1)
    batch_id: str
    operation: BatchOperation
    query: str = Field(max_length=MAX_QUERY_CHARS)
    reason: str = Field(default="", max_length=1000)
    signal_name: str = Field(default="", max_length=200)
    signal_input: list[Any] = Field(default_factory=list)  # plain JSON values, the signal's arguments
    rate: float = DEFAULT_RATE  # runs a second

    @field_validator("batch_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return checked_batch_id(value)

    @field_validator("query")
    @classmethod
    def _check_query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "a batch needs a query (ExecutionStatus = 'Running' AND ...): it acts on every run"
            )
        return value

    @field_validator("rate")
    @classmethod
    def _check_rate(cls, value: float) -> float:
        if not MIN_RATE <= value <= MAX_RATE:  # also refuses NaN
            raise ValueError(f"rate {value:g}/s: between {MIN_RATE:g}/s and {MAX_RATE:g}/s")
        return value

    @model_validator(mode="after")
    def _check_signal(self) -> BatchDefinition:
        if self.operation == "signal" and not self.signal_name:
            raise ValueError("a batch signal needs the signal's name")
        if self.operation != "signal" and (self.signal_name or self.signal_input):
            raise ValueError(f"a batch {self.operation} sends no signal: drop the signal's name and input")
        return self


def batch_request_id(chain: str, run_id: str) -> str:
    """The id of the request a batch sends to ``run_id``: the same on every attempt, so the engine takes
    it once (a signal by its id; a cancel or terminate once by nature). ``chain`` is the batch's first
    run id: a batch started again under the same id sends new requests."""
    return f"batch:{chain}:{run_id}"


def checked_batch_id(value: str) -> str:
    if not _BATCH_ID.fullmatch(value):
        raise ValueError(
            f"batch id {value[:120]!r}: 1 to 120 letters, digits and . _ : @ -, starting with a letter or "
            "a digit"
        )
    return value


class SelectedRun(BaseModel):
    """A run a page of the batch selected, as the run store had it then."""

    run_id: str
    workflow_id: str
    start_time: datetime
    status: str


class RunResult(BaseModel):
    run_id: str
    workflow_id: str
    outcome: RunOutcome
    detail: str = ""  # why, when it failed or was skipped


class PageOutcome(BaseModel):
    """What became of a page's runs, and the page after it (empty: none is left)."""

    results: list[RunResult]
    next_page: list[SelectedRun] = Field(default_factory=list)


class BatchProgress(BaseModel):
    """How far the batch got: the keyset cursor of the last page done (its last run's start time and
    id: the next page starts after it) and what became of the runs so far. Each page is counted once,
    as its results are recorded in the workflow's history, and a run is on one page only (the cursor
    only moves on), so every run is counted once whatever crashed meanwhile."""

    total_estimate: int | None = None  # the runs the query matched when the batch began
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # closed before the batch reached them (or, for a cancel, cancelled already)
    after_time: datetime | None = None
    after_run_id: str | None = None
    last_error: str = ""
    recent_failures: list[RunResult] = Field(default_factory=list)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @property
    def cursor(self) -> tuple[datetime, str] | None:
        if self.after_time is None or self.after_run_id is None:
            return None
        return self.after_time, self.after_run_id

    def record(self, page: list[SelectedRun], results: list[RunResult]) -> None:
        """Count a page's results (one per run of the page: a result for another run, or a second for
        the same, is not counted) and move the cursor past the page."""
        wanted = {run.run_id for run in page}
        for result in results:
            if result.run_id not in wanted:
                continue
            wanted.discard(result.run_id)
            if result.outcome == "succeeded":
                self.succeeded += 1
            elif result.outcome == "skipped":
                self.skipped += 1
            else:
                self.failed += 1
                self.last_error = f"{result.workflow_id} ({result.run_id}): {result.detail}"
                self.recent_failures = [*self.recent_failures, result][-FAILURES_KEPT:]
        if page:
            last = min(page, key=lambda run: (run.start_time, run.run_id))
            self.after_time, self.after_run_id = last.start_time, last.run_id


def progress_text(counts: dict[str, Any]) -> str:
    """``120/500 done: 118 succeeded, 1 failed, 1 skipped`` (``total`` unknown: ``120 done: ...``)."""
    done = counts.get("succeeded", 0) + counts.get("failed", 0) + counts.get("skipped", 0)
    total = counts.get("total_estimate")
    head = f"{done}/{total}" if isinstance(total, int) else str(done)
    return (
        f"{head} done: {counts.get('succeeded', 0)} succeeded, {counts.get('failed', 0)} failed, "
        f"{counts.get('skipped', 0)} skipped"
    )
