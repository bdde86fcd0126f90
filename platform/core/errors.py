"""``PerdureError``, the base of every error the SDK raises (workflow failures, client errors, payload
and registry errors). Kept apart from ``failures`` so that modules ``failures`` builds on (payloads,
definitions) can raise errors of the hierarchy too."""

from __future__ import annotations


class PerdureError(Exception):
    """Base of the errors a workflow, an activity or a client sees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def cause(self) -> BaseException | None:
        return self.__cause__
