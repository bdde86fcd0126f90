"""What an update's answer means to the caller awaiting it: the handler's result, or the error that says
why there is none (both clients answer the same way)."""

from __future__ import annotations

from typing import Any

from perdure.platform.core.failures import Failure, exception_from_failure
from perdure.platform.core.outbox import UpdateOutcome
from perdure.platform.core.payloads import DataConverter, Payload
from perdure.tenants.client_errors import WorkflowNotFoundError, WorkflowUpdateFailedError


def update_outcome(
    workflow_id: str,
    update_id: str,
    update_name: str,
    outcome: UpdateOutcome,
    result: Payload | None,
    failure: Failure | None,
    message: str,
    converter: DataConverter,
    return_type: Any,
) -> Any:
    """The decoded result of a completed update; ``WorkflowUpdateFailedError`` (with the cause) if it was
    refused or failed; ``WorkflowNotFoundError`` if the run closed before taking it."""
    match outcome:
        case "completed":
            return converter.from_payload(result, return_type) if result is not None else None
        case "failed" | "rejected":
            error = WorkflowUpdateFailedError(
                workflow_id, update_id, update_name, rejected=outcome == "rejected"
            )
            if failure is not None:
                error.__cause__ = exception_from_failure(failure, converter)
            raise error
        case "run_closed":
            raise WorkflowNotFoundError(message or f"workflow {workflow_id!r} closed before taking it")
    raise ValueError(f"update {update_id!r} answered {outcome!r}, which is no outcome")
