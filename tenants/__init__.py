"""What tenants import: the authoring API (``App``, ``workflow``, ``activity``, ``RetryPolicy``), the
``Client`` that connects a tenant app to its namespace (a ``WorkflowClient``, as
``perdure.tenants.testing.LocalEnvironment`` is, for local testing with time skipping and replay), and
the errors, all ``PerdureError``s:

- ``FailureError``, what fails an activity or a workflow, recorded in histories: ``ApplicationError``,
  ``ActivityError``, ``ChildWorkflowError``, ``TimedOutError``, ``CancellationError``,
  ``TerminationError``, and ``WorkflowFailureError`` (what ``result()`` raises for a run that did not
  complete);
- what a client's request meets: ``WorkflowAlreadyStartedError``, ``WorkflowNotFoundError``,
  ``AuthenticationError``, ``QuotaExceededError``, ``NamespaceSuspendedError``,
  ``MalformedRequestError``, ``ServiceUnavailableError``, and ``WorkflowUpdateFailedError`` (an update
  refused, or whose handler failed), ``ScheduleNotFoundError``, ``ScheduleAlreadyExistsError``,
  ``BatchNotFoundError``, ``BatchAlreadyRunningError``, ``WorkflowResetError`` (a reset refused);
- payloads and registrations: ``PayloadTooLargeError``, ``PayloadDecodeError``,
  ``UnknownWorkflowTypeError``, ``UnknownActivityTypeError`` (``UnboundActivityError``), ``AppLoadError``;
- replay: ``NonDeterminismError``, ``NondeterministicCallError``.
"""

from perdure.platform.core.definitions import (
    UnboundActivityError,
    UnknownActivityTypeError,
    UnknownWorkflowTypeError,
)
from perdure.platform.core.errors import PerdureError
from perdure.platform.core.failures import (
    ActivityError,
    ApplicationError,
    CancellationError,
    ChildWorkflowError,
    FailureError,
    NonDeterminismError,
    NondeterministicCallError,
    TerminationError,
    TimedOutError,
    WorkflowFailureError,
)
from perdure.platform.core.payloads import (
    DataConverter,
    Payload,
    PayloadCodec,
    PayloadDecodeError,
    PayloadTooLargeError,
)
from perdure.platform.core.retry import RetryPolicy
from perdure.platform.core.schedule_spec import IntervalSpec, ScheduleSpec
from perdure.platform.core.start_rules import IdReusePolicy
from perdure.tenants import activity, workflow
from perdure.tenants.app import App
from perdure.tenants.app_loader import AppLoadError
from perdure.tenants.batch_handle import BatchHandle
from perdure.tenants.client import Client
from perdure.tenants.client_errors import (
    AuthenticationError,
    BatchAlreadyRunningError,
    BatchNotFoundError,
    MalformedRequestError,
    NamespaceSuspendedError,
    QuotaExceededError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    ServiceUnavailableError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
    WorkflowResetError,
    WorkflowUpdateFailedError,
)
from perdure.tenants.schedule_handle import ScheduleHandle
from perdure.tenants.workflow_client import (
    WorkflowClient,
    WorkflowDescription,
    WorkflowHandle,
    WorkflowUpdateHandle,
)

__all__ = [
    "ActivityError",
    "App",
    "AppLoadError",
    "ApplicationError",
    "AuthenticationError",
    "BatchAlreadyRunningError",
    "BatchHandle",
    "BatchNotFoundError",
    "CancellationError",
    "ChildWorkflowError",
    "Client",
    "DataConverter",
    "FailureError",
    "IdReusePolicy",
    "IntervalSpec",
    "MalformedRequestError",
    "NamespaceSuspendedError",
    "NonDeterminismError",
    "NondeterministicCallError",
    "Payload",
    "PayloadCodec",
    "PayloadDecodeError",
    "PayloadTooLargeError",
    "PerdureError",
    "QuotaExceededError",
    "RetryPolicy",
    "ScheduleAlreadyExistsError",
    "ScheduleHandle",
    "ScheduleNotFoundError",
    "ScheduleSpec",
    "ServiceUnavailableError",
    "TerminationError",
    "TimedOutError",
    "UnboundActivityError",
    "UnknownActivityTypeError",
    "UnknownWorkflowTypeError",
    "WorkflowAlreadyStartedError",
    "WorkflowClient",
    "WorkflowDescription",
    "WorkflowFailureError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowResetError",
    "WorkflowUpdateFailedError",
    "WorkflowUpdateHandle",
    "activity",
    "workflow",
]
