"""What tenants import: the authoring API (``App``, ``workflow``, ``activity``, ``RetryPolicy``), the
``Client`` that connects a tenant app to its namespace, errors, and (from ``perdure.tenants.testing``)
local testing with time skipping and replay."""

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
from perdure.tenants.client import Client, WorkflowHandle
from perdure.tenants.client_errors import (
    AuthenticationError,
    NamespaceSuspendedError,
    QuotaExceededError,
    ServiceUnavailableError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)

__all__ = [
    "ActivityError",
    "App",
    "ApplicationError",
    "AuthenticationError",
    "CancelledFailure",
    "ChildWorkflowError",
    "Client",
    "DataConverter",
    "NamespaceSuspendedError",
    "NonDeterminismError",
    "NondeterministicCallError",
    "Payload",
    "PayloadCodec",
    "PayloadTooLargeError",
    "PerdureError",
    "QuotaExceededError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "TerminatedFailure",
    "TimeoutFailure",
    "UnknownActivityTypeError",
    "UnknownWorkflowTypeError",
    "WorkflowAlreadyStartedError",
    "WorkflowFailureError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "activity",
    "workflow",
]
