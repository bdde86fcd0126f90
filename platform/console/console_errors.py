"""What a console page answers instead of its content: bad input, and the pages that say so."""

from __future__ import annotations


class ConsoleInputError(Exception):
    """The request cannot be done as sent (bad JSON, an unknown type, too large): nothing was done.
    Shown on the page with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
