"""How the bulky parts of a cell's documents are stored: a run's state, its history tail and its outbox,
and a history batch's events, each as JSON in one binary field.

The database never looks inside them (queries and indexes use the run document's top-level fields), and
FerretDB converts every field of a document to and from PostgreSQL's JSONB on each write: a run's state
alone is over a hundred fields. Stored opaque, a run's update costs half as much on this stack
(docs/performance.md, "Cheaper writes"), and the engine encodes and decodes them in one call each.

Documents written before hold the same parts as nested documents and arrays; every reader takes both.
An empty tail or outbox stays an empty array, so a test of its truth means the same either way.
"""

from __future__ import annotations

import json
from typing import Any

from bson import Binary
from pydantic import BaseModel

Document = dict[str, Any]


def packed_json(data: bytes) -> Binary | list[Any]:
    """Encoded JSON as a document's field (an empty array stays one, a test of its truth unchanged)."""
    return [] if data == b"[]" else Binary(data)


def packed(value: list[Any]) -> Binary | list[Any]:
    """A list of JSON values (history events, outbox entries) as a document's field."""
    return packed_json(json.dumps(value, separators=(",", ":")).encode())


def packed_model(model: BaseModel) -> Binary:
    return Binary(model.model_dump_json().encode())


def unpacked(field: Any) -> Any:
    """A stored part as JSON values, however it was stored (None when absent)."""
    if isinstance(field, bytes):  # bson's Binary is bytes
        return json.loads(field)
    return field


def stored_size(field: Any) -> int:
    """The size of a packed list of JSON values as metered (its compact JSON)."""
    if isinstance(field, bytes):
        return len(field)
    return len(json.dumps(field or [], separators=(",", ":")))


def state_of(document: Document) -> Document:
    """A run document's state as JSON values (what ``RunState`` dumps), for readers that need a field or
    two of it without validating the whole."""
    state = unpacked(document.get("state"))
    return state if isinstance(state, dict) else {}
