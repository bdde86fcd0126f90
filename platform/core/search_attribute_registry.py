"""What a namespace may register as a search attribute: a name its runs' documents and its queries can
both carry, of one type, within a bound per namespace."""

from __future__ import annotations

from typing import get_args

from perdure.platform.core.visibility_plan import SEARCH_ATTRIBUTE_NAME
from perdure.platform.core.visibility_query import FIELDS, AttributeType

ATTRIBUTE_TYPES: tuple[AttributeType, ...] = get_args(AttributeType)
MAX_ATTRIBUTES = 50
# Temporal's own attributes besides the built-in fields: a query naming them means them, so no
# namespace may give them another meaning.
RESERVED = frozenset(
    {
        *FIELDS,
        "ExecutionTime",
        "ExecutionDuration",
        "HistoryLength",
        "HistorySizeBytes",
        "StateTransitionCount",
        "TaskQueue",
        "TemporalChangeVersion",
        "BinaryChecksums",
        "BuildIds",
        "BatcherNamespace",
        "BatcherUser",
        "ParentWorkflowId",
        "ParentRunId",
        "RootWorkflowId",
        "RootRunId",
        "TemporalScheduledById",
        "TemporalScheduledStartTime",
        "TemporalSchedulePaused",
        "TemporalNamespaceDivision",
    }
)
# Words of the query language, which a field cannot be called (whatever their case).
KEYWORDS = frozenset(
    {"and", "or", "not", "in", "between", "starts_with", "order", "by", "asc", "desc", "true", "false"}
)


class RegistrationError(ValueError):
    pass


def check_registration(registered: dict[str, AttributeType], name: str, kind: str) -> bool:
    """Whether registering ``name`` of type ``kind`` changes ``registered`` (False: registered already
    with that type); raises ``RegistrationError`` saying why it cannot be registered."""
    if not SEARCH_ATTRIBUTE_NAME.match(name):
        raise RegistrationError(
            f"search attribute name {name!r} must be 1-100 letters, digits or '_', not starting with a digit"
        )
    if name in RESERVED or name.startswith("Temporal"):
        raise RegistrationError(f"{name!r} is a built-in or reserved attribute name")
    if name.lower() in KEYWORDS:
        raise RegistrationError(f"{name!r} is a word of the query language")
    if kind not in ATTRIBUTE_TYPES:
        raise RegistrationError(f"type {kind!r} is none of {', '.join(ATTRIBUTE_TYPES)}")
    if name in registered:
        if registered[name] != kind:
            raise RegistrationError(f"{name!r} is registered already, as {registered[name]}, not {kind}")
        return False
    if len(registered) >= MAX_ATTRIBUTES:
        raise RegistrationError(f"a namespace registers at most {MAX_ATTRIBUTES} search attributes")
    return True
