"""Errors a tenant app gets from the client (and from ``LocalEnvironment``, which raises the same)."""

from __future__ import annotations


class WorkflowAlreadyStartedError(Exception):
    def __init__(self, workflow_id: str, run_id: str | None = None, message: str | None = None) -> None:
        super().__init__(message or f"workflow {workflow_id!r} is already running (run {run_id})")
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowNotFoundError(LookupError):
    pass


class AuthenticationError(Exception):
    """The connection string's key was refused (wrong, revoked or rotated)."""


class QuotaExceededError(Exception):
    """The namespace runs as many workflows as its quota allows."""


class NamespaceSuspendedError(Exception):
    """The namespace is suspended: it takes no new work (starts, signals, cancels, queries) until it is
    resumed; describing and listing still work."""


class MalformedRequestError(ValueError):
    """Admission could not read the request (a client and platform of different versions)."""


class ServiceUnavailableError(ConnectionError):
    """The namespace's ingress did not answer within the client's request timeout (the broker is down
    or unreachable for longer than that); the request may be sent again with the same request id."""
