"""What tenants import: the authoring API (``App``, ``workflow``, ``activity``, ``RetryPolicy``), errors,
and (from ``perdure.tenants.testing``) local testing with time skipping and replay."""

from perdure.platform.core.definitions import UnknownActivityTypeError, UnknownWorkflowTypeError
from perdure.platform.core.failures import (
    ActivityError,
    ApplicationError,
    CancelledFailure,
    ChildWorkflowError,
    NonDeterminismError,
    NondeterministicCallError,
    PerdureError,
    TerminatedFailure,
    TimeoutFailure,
    WorkflowFailureError,
)
from perdure.platform.core.payloads import DataConverter, Payload, PayloadCodec, PayloadTooLargeError
from perdure.platform.core.retry import RetryPolicy
from perdure.tenants import activity, workflow
from perdure.tenants.app import App

__all__ = [
    "ActivityError",
    "App",
    "ApplicationError",
    "CancelledFailure",
    "ChildWorkflowError",
    "DataConverter",
    "NonDeterminismError",
    "NondeterministicCallError",
    "Payload",
    "PayloadCodec",
    "PayloadTooLargeError",
    "PerdureError",
    "RetryPolicy",
    "TerminatedFailure",
    "TimeoutFailure",
    "UnknownActivityTypeError",
    "UnknownWorkflowTypeError",
    "WorkflowFailureError",
    "activity",
    "workflow",
]
