"""The errors that fail activities and workflows as tenants see them (``FailureError`` and its kinds), and
``Failure``, their serialisable form in history and on the wire."""

from __future__ import annotations

import traceback
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from perdure.platform.core.errors import PerdureError
from perdure.platform.core.payloads import DataConverter, Payload, default_converter

FailureKind = Literal[
    "application", "activity", "child_workflow", "timeout", "cancelled", "terminated", "internal"
]
TimeoutType = Literal["start_to_close", "schedule_to_close", "schedule_to_start", "heartbeat", "execution"]


class Failure(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: FailureKind
    message: str
    type: str = ""
    non_retryable: bool = False
    stack_trace: str = ""
    details: list[Payload] = []
    timeout_type: TimeoutType | None = None
    # Context of activity and child failures.
    activity_type: str | None = None
    workflow_type: str | None = None
    workflow_id: str | None = None
    scheduled_event_id: int | None = None
    attempt: int | None = None
    cause: Failure | None = None


class FailureError(PerdureError):
    """Base of the errors that a run's history or a reply records as a ``Failure`` (what fails an activity
    or a workflow); ``failure`` is the recorded form, when the error was rebuilt from one. Workflow code
    that raises one fails its run; most other exceptions fail only the workflow task (a bug: retried
    until corrected code is deployed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.failure: Failure | None = None


class ApplicationError(FailureError):
    """Raised by tenant code to fail an activity or a workflow; ``non_retryable`` stops retries."""

    def __init__(
        self, message: str, *details: Any, type: str | None = None, non_retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.details = list(details)
        self.type = type or self.__class__.__name__
        self.non_retryable = non_retryable


class ActivityError(FailureError):
    """An activity failed for good (retries exhausted, non-retryable, timed out or cancelled)."""

    def __init__(
        self, message: str, *, activity_type: str, scheduled_event_id: int, attempt: int | None = None
    ) -> None:
        super().__init__(message)
        self.activity_type = activity_type
        self.scheduled_event_id = scheduled_event_id
        self.attempt = attempt


class ChildWorkflowError(FailureError):
    def __init__(self, message: str, *, workflow_type: str, workflow_id: str) -> None:
        super().__init__(message)
        self.workflow_type = workflow_type
        self.workflow_id = workflow_id


class WorkflowFailureError(FailureError):
    """What ``result()`` raises when a run failed, was cancelled, terminated or timed out."""


class TimedOutError(FailureError):
    """An activity or a run ran out of time; ``timeout_type`` says which of its timeouts."""

    def __init__(self, message: str, *, timeout_type: TimeoutType) -> None:
        super().__init__(message)
        self.timeout_type = timeout_type


class CancellationError(FailureError):
    """A run or an activity was cancelled on request (workflow code sees ``asyncio.CancelledError`` at its
    ``await``; this is how a cancellation is recorded and what a caller of ``result()`` finds as cause)."""


class TerminationError(FailureError):
    """A run was terminated: ended at once, its code not told."""


class NonDeterminismError(PerdureError):
    """Replayed code issued commands that differ from the recorded history."""

    def __init__(self, event_id: int | None, expected: str, actual: str) -> None:
        where = f"at event {event_id}" if event_id is not None else "at the end of the history"
        super().__init__(f"non-determinism {where}: history has {expected}, code issued {actual}")
        self.event_id = event_id
        self.expected = expected
        self.actual = actual


class NondeterministicCallError(PerdureError, RuntimeError):
    """Workflow code called something that differs between runs (clock, randomness, I/O, threads)."""


def failure_from_exception(exc: BaseException, converter: DataConverter = default_converter) -> Failure:
    cause = exc.__cause__
    cause_failure = failure_from_exception(cause, converter) if cause is not None else None
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=False))[-8000:]
    if isinstance(exc, FailureError) and exc.failure is not None:
        return exc.failure
    if isinstance(exc, ApplicationError):
        try:
            details = converter.to_payloads(exc.details, "error details")
        except Exception:
            details = []
        return Failure(
            kind="application",
            message=exc.message,
            type=exc.type,
            non_retryable=exc.non_retryable,
            stack_trace=stack,
            details=details,
            cause=cause_failure,
        )
    if isinstance(exc, ActivityError):
        return Failure(
            kind="activity",
            message=exc.message,
            type="ActivityError",
            activity_type=exc.activity_type,
            scheduled_event_id=exc.scheduled_event_id,
            attempt=exc.attempt,
            cause=cause_failure,
        )
    if isinstance(exc, ChildWorkflowError):
        return Failure(
            kind="child_workflow",
            message=exc.message,
            type="ChildWorkflowError",
            workflow_type=exc.workflow_type,
            workflow_id=exc.workflow_id,
            cause=cause_failure,
        )
    # The recorded types keep the classes' former names: histories and replies written before the
    # rename carry them, and tenants' code may match on them.
    if isinstance(exc, TimedOutError):
        return Failure(
            kind="timeout", message=exc.message, type="TimeoutFailure", timeout_type=exc.timeout_type
        )
    if isinstance(exc, CancellationError):
        return Failure(kind="cancelled", message=exc.message, type="CancelledFailure")
    if isinstance(exc, TerminationError):
        return Failure(kind="terminated", message=exc.message, type="TerminatedFailure")
    # Any other exception from tenant code: an application failure named by its class.
    return Failure(
        kind="application",
        message=str(exc) or type(exc).__name__,
        type=type(exc).__name__,
        stack_trace=stack,
        cause=cause_failure,
    )


def exception_from_failure(failure: Failure, converter: DataConverter = default_converter) -> FailureError:
    exc: FailureError
    if failure.kind == "application":
        try:
            details = converter.from_payloads(failure.details)
        except Exception:
            details = []
        exc = ApplicationError(
            failure.message, *details, type=failure.type, non_retryable=failure.non_retryable
        )
    elif failure.kind == "activity":
        exc = ActivityError(
            failure.message,
            activity_type=failure.activity_type or "?",
            scheduled_event_id=failure.scheduled_event_id or 0,
            attempt=failure.attempt,
        )
    elif failure.kind == "child_workflow":
        exc = ChildWorkflowError(
            failure.message,
            workflow_type=failure.workflow_type or "?",
            workflow_id=failure.workflow_id or "?",
        )
    elif failure.kind == "timeout":
        exc = TimedOutError(failure.message, timeout_type=failure.timeout_type or "execution")
    elif failure.kind == "cancelled":
        exc = CancellationError(failure.message)
    elif failure.kind == "terminated":
        exc = TerminationError(failure.message)
    else:
        exc = FailureError(failure.message)
    exc.failure = failure
    if failure.cause is not None:
        exc.__cause__ = exception_from_failure(failure.cause, converter)
    return exc
