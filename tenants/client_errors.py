"""Errors a tenant app gets from a workflow client (``Client``, and ``LocalEnvironment``, which raises the
same). All are ``PerdureError``s; those a caller may know by a builtin kind keep it as a second base
(``LookupError``, ``ValueError``, ``ConnectionError``)."""

from __future__ import annotations

from perdure.platform.core.errors import PerdureError
from perdure.platform.core.failures import FailureError


class WorkflowAlreadyStartedError(PerdureError):
    """A start was refused: the workflow id has a running run, or its id-reuse policy forbids another.
    ``run_id`` is the run in the way, when the refusal names it."""

    def __init__(self, workflow_id: str, run_id: str | None = None, message: str | None = None) -> None:
        super().__init__(message or f"workflow {workflow_id!r} is already running (run {run_id})")
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowNotFoundError(PerdureError, LookupError):
    pass


class ScheduleNotFoundError(PerdureError, LookupError):
    """The namespace has no schedule of that id (never made, or deleted)."""


class ScheduleAlreadyExistsError(PerdureError):
    """A create of a schedule id the namespace has already: delete it first, or choose another id."""


class BatchNotFoundError(PerdureError, LookupError):
    """The namespace has no batch of that id."""


class BatchAlreadyRunningError(PerdureError):
    """A start of a batch id the namespace runs already: stop it, wait for it, or choose another id."""


class AuthenticationError(PerdureError):
    """The connection string's key was refused (wrong, revoked or rotated)."""


class QuotaExceededError(PerdureError):
    """The namespace runs as many workflows as its quota allows."""


class NamespaceSuspendedError(PerdureError):
    """The namespace is suspended: it takes no new work (starts, signals, cancels, queries) until it is
    resumed; describing and listing still work."""


class WorkflowResetError(PerdureError, ValueError):
    """A reset was refused: the point is not one the run can be reset to (the message names those it
    can), or the run is not the workflow's current one while that one is open."""


class MalformedRequestError(PerdureError, ValueError):
    """Admission could not read the request (a client and platform of different versions)."""


class ServiceUnavailableError(PerdureError, ConnectionError):
    """The namespace's ingress did not answer within the client's request timeout (the broker is down
    or unreachable for longer than that); the request may be sent again with the same request id."""


class WorkflowUpdateFailedError(FailureError):
    """An update answered no result: the run refused it (``rejected``: its validator raised, the
    workflow has no update of that name, or the run holds as many updates as it may at once), its
    handler raised, or the run closed before its handler finished. ``cause`` says which, as the
    failure the run recorded or answered."""

    def __init__(self, workflow_id: str, update_id: str, update_name: str, *, rejected: bool) -> None:
        what = "refused" if rejected else "failed"
        super().__init__(f"update {update_name!r} (id {update_id!r}) of workflow {workflow_id!r} {what}")
        self.workflow_id = workflow_id
        self.update_id = update_id
        self.update_name = update_name
        self.rejected = rejected
