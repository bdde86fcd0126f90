"""What a twin is told: a change to its entity, signalled to it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class TwinChange(BaseModel):
    """A change signalled to a twin: ``kind`` says what, ``fields`` with what."""

    kind: Literal["update", "suspend", "resume", "delete", "retire"]
    fields: dict[str, Any] = {}
