"""A visibility query evaluated over run documents in memory, as the database evaluates its filter:
what ``LocalEnvironment`` answers queries with, and the expectation tests compare the database with.

A document holds the run document's fields (``workflow_id``, ``workflow_type``, ``_id``, ``status``,
``start_time``, ``close_time``) and its search attributes as ``attribute_fields`` copies them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from perdure.platform.core.visibility_plan import (
    DEFAULT_ORDER,
    Document,
    attribute_fields,
    document_field,
    mongo_sort,
    order_of,
    sort_documents,
)
from perdure.platform.core.visibility_query import (
    All,
    AnyOf,
    AttributeType,
    Between,
    Comparison,
    Condition,
    Member,
    StartsWith,
    Value,
    VisibilityQuery,
)


def run_document(
    *,
    run_id: str,
    workflow_id: str,
    workflow_type: str,
    status: str,
    start_time: datetime,
    close_time: datetime | None,
    search_attributes: dict[str, Any],
) -> Document:
    """A run as the evaluator reads it (the fields of its run document that queries name)."""
    return {
        "_id": run_id,
        "workflow_id": workflow_id,
        "workflow_type": workflow_type,
        "status": status,
        "start_time": _as_stored(start_time),
        "close_time": _as_stored(close_time) if close_time is not None else None,
        **attribute_fields(search_attributes),
    }


def _as_stored(moment: datetime) -> datetime:
    """A time as the run store keeps it (to the millisecond), so a query compares here as there."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _kind(value: Any) -> str:
    # Values compare only with values of their kind, as in MongoDB (no string is less than a number).
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, datetime):
        return "time"
    return type(value).__name__


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _holds(stored: Any, test: Any) -> bool:
    """Whether ``stored`` (a value, or a list whose elements each count) passes ``test``."""
    if isinstance(stored, list):
        return any(_holds(element, test) for element in stored)
    return bool(test(stored))


def _equal(stored: Any, value: Value) -> bool:
    return _holds(stored, lambda s: _kind(s) == _kind(value) and _comparable(s) == _comparable(value))


def _compare(stored: Any, operator: str, value: Value) -> bool:
    def test(s: Any) -> bool:
        if s is None or _kind(s) != _kind(value):
            return False
        a, b = _comparable(s), _comparable(value)
        return bool({"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[operator])

    return _holds(stored, test)


def matches(document: Document, condition: Condition | None, attributes: dict[str, AttributeType]) -> bool:
    """Whether a run ``document`` satisfies ``condition`` (with ``attributes`` the types of the search
    attributes it names)."""
    if condition is None:
        return True
    if isinstance(condition, All):
        return all(matches(document, part, attributes) for part in condition.parts)
    if isinstance(condition, AnyOf):
        return any(matches(document, part, attributes) for part in condition.parts)
    stored = document.get(document_field(condition.field, attributes))
    if isinstance(condition, Comparison):
        if condition.operator == "=":
            return _equal(stored, condition.value)
        if condition.operator == "!=":
            return not _equal(stored, condition.value)
        return _compare(stored, condition.operator, condition.value)
    if isinstance(condition, Member):
        found = any(_equal(stored, value) for value in condition.values)
        return not found if condition.negated else found
    if isinstance(condition, Between):
        return _compare(stored, ">=", condition.low) and _compare(stored, "<=", condition.high)
    assert isinstance(condition, StartsWith)
    prefix = condition.prefix
    return _holds(stored, lambda s: isinstance(s, str) and s.startswith(prefix))


def select(documents: list[Document], query: VisibilityQuery) -> list[Document]:
    """The documents that match ``query``, in its order (newest first without an ORDER BY)."""
    found = [d for d in documents if matches(d, query.condition, query.attributes)]
    return sort_documents(found, mongo_sort(order_of(query) or DEFAULT_ORDER, query.attributes))
