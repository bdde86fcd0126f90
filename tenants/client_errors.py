"""Errors a tenant app gets from a workflow client (``Client``, and ``LocalEnvironment``, which raises the
same). All are ``PerdureError``s; those a caller may know by a builtin kind keep it as a second base
(``LookupError``, ``ValueError``, ``ConnectionError``)."""

from __future__ import annotations

from perdure.platform.core.errors import PerdureError


class WorkflowAlreadyStartedError(PerdureError):
    """A start was refused: the workflow id has a running run, or its id-reuse policy forbids another.
    ``run_id`` is the run in the way, when the refusal names it."""

    def __init__(self, workflow_id: str, run_id: str | None = None, message: str | None = None) -> None:
        super().__init__(message or f"workflow {workflow_id!r} is already running (run {run_id})")
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowNotFoundError(PerdureError, LookupError):
    pass


class AuthenticationError(PerdureError):
    """The connection string's key was refused (wrong, revoked or rotated)."""


class QuotaExceededError(PerdureError):
    """The namespace runs as many workflows as its quota allows."""


class NamespaceSuspendedError(PerdureError):
    """The namespace is suspended: it takes no new work (starts, signals, cancels, queries) until it is
    resumed; describing and listing still work."""


class MalformedRequestError(PerdureError, ValueError):
    """Admission could not read the request (a client and platform of different versions)."""


class ServiceUnavailableError(PerdureError, ConnectionError):
    """The namespace's ingress did not answer within the client's request timeout (the broker is down
    or unreachable for longer than that); the request may be sent again with the same request id."""
