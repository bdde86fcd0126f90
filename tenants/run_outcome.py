"""What a closed run means to the caller awaiting it: its result, or the error that says why not."""

from __future__ import annotations

from typing import Any

from perdure.platform.core.failures import (
    CancellationError,
    Failure,
    TerminationError,
    TimedOutError,
    WorkflowFailureError,
    exception_from_failure,
)
from perdure.platform.core.payloads import DataConverter, Payload


def run_outcome(
    workflow_id: str,
    status: str,
    result: Payload | None,
    failure: Failure | None,
    converter: DataConverter,
    return_type: Any,
) -> Any:
    """The decoded result of a completed run; ``WorkflowFailureError`` (with the cause) otherwise."""
    if status == "completed":
        return converter.from_payload(result, return_type) if result else None
    cause: BaseException
    if status == "failed" and failure is not None:
        cause = exception_from_failure(failure, converter)
    elif status == "canceled":
        cause = CancellationError("workflow cancelled")
    elif status == "terminated":
        cause = TerminationError("workflow terminated")
    else:
        cause = TimedOutError("workflow timed out", timeout_type="execution")
    error = WorkflowFailureError(f"workflow {workflow_id!r} {status}")
    error.__cause__ = cause
    raise error
