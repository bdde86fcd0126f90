"""What creates a schedule and what a request to one carries: the ``Schedule`` workflow's input (sent by
``perdure schedule create``, and by whichever path a tenant's client takes later) and the body of its
request signals. Checked where they are made and again where they are read (the workflow refuses a
request that does not read instead of failing on it)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from perdure.platform.core.schedule_policy import (
    DEFAULT_CATCHUP_WINDOW,
    DEFAULT_OVERLAP_POLICY,
    OverlapPolicy,
)
from perdure.platform.core.schedule_spec import ScheduleSpec

RequestKind = Literal["pause", "unpause", "trigger", "backfill", "delete"]
# Printable, no spaces: it names the schedule's workflow and begins every scheduled run's workflow id.
_SCHEDULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")
# Shorter, and a start delayed by the workflow's own progress (a deploy, a busy worker) would count as
# missed.
MIN_CATCHUP_WINDOW = timedelta(seconds=1)


class ScheduleDefinition(BaseModel):
    """A schedule as created: when (``spec``), what each action starts (``workflow_type(*args)`` in
    ``namespace``), and its policies. It does not change afterwards; pausing changes its state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    namespace: str = Field(min_length=1)
    schedule_id: str
    workflow_type: str = Field(min_length=1)
    args: list[Any] = Field(default_factory=list)  # plain JSON values, the scheduled run's arguments
    spec: ScheduleSpec
    overlap: OverlapPolicy = DEFAULT_OVERLAP_POLICY
    catchup_window: timedelta = DEFAULT_CATCHUP_WINDOW
    paused: bool = False
    note: str = Field(default="", max_length=1000)

    @field_validator("schedule_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return checked_schedule_id(value)

    @field_validator("catchup_window")
    @classmethod
    def _check_window(cls, value: timedelta) -> timedelta:
        if value < MIN_CATCHUP_WINDOW:
            raise ValueError(f"catch-up window of {value.total_seconds():g}s: at least 1s")
        return value


class ScheduleRequest(BaseModel):
    """A request to a schedule, as its signal carries it (the kind is the signal's name). The request id
    is the caller's: the schedule takes each id once, and answers what became of it."""

    version: Literal[1] = 1
    kind: RequestKind
    request_id: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=1000)
    overlap: OverlapPolicy | None = None  # trigger and backfill: the schedule's own when None
    start: datetime | None = None  # backfill: the period, both ends inclusive, timezone-aware
    end: datetime | None = None

    @model_validator(mode="after")
    def _check_period(self) -> ScheduleRequest:
        if self.kind != "backfill":
            return self
        if self.start is None or self.end is None:
            raise ValueError("a backfill needs a start and an end")
        if self.start.utcoffset() is None or self.end.utcoffset() is None:
            raise ValueError("a backfill's start and end must be timezone-aware")
        if self.end < self.start:
            raise ValueError("a backfill's end must not be before its start")
        return self

    def signal_body(self) -> dict[str, Any]:
        """What the signal named ``kind`` carries."""
        return self.model_dump(mode="json", exclude={"kind"}, exclude_none=True)


def checked_schedule_id(value: str) -> str:
    """``value`` if it can be a schedule id; a ``ValueError`` saying what one is otherwise. Every path
    that names a schedule checks it: the id is part of its workflow's, behind the namespace's."""
    if not _SCHEDULE_ID.fullmatch(value):
        raise ValueError(
            f"schedule id {value[:200]!r}: 1 to 200 letters, digits and . _ : @ -, starting with a letter "
            "or a digit"
        )
    return value


def first_error(exc: ValidationError) -> str:
    """A definition's or a request's first problem, in one line: a check's own words, or the field and
    what pydantic says of it."""
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ValueError):
        return str(cause)
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
