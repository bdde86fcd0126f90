"""How a visibility query meets the run documents: which document field each query field is, the
MongoDB filter of a condition, and the plan (which index-served equalities find every matching run).

A run's search attributes are copied into top-level fields of its run document (``sa_NAME``; a value
that is an ISO-8601 time with a zone also as a time, ``st_NAME``) by the same write that stores its
state, so an index over ``(namespace, sa_NAME, start_time)`` can serve them. On the local FerretDB only
top-level equalities on strings, booleans and integers reach PostgreSQL's indexes, so a plan is a list
of such equalities (*seeds*) that every matching run satisfies at least one of: each seed is read by its
own index-served query, made disjoint from the ones before it. A query with no seed is answered by the
namespace alone, which is refused for a namespace over a bound (``UnservedQueryError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from perdure.platform.core.visibility_query import (
    All,
    AnyOf,
    AttributeType,
    Between,
    Comparison,
    Condition,
    Member,
    QueryError,
    Sort,
    StartsWith,
    Value,
    VisibilityQuery,
)

Document = dict[str, Any]
# What a search attribute may be called: a top-level field of the run document (no '$', no '.').
SEARCH_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
ATTRIBUTE_PREFIX = "sa_"
TIME_PREFIX = "st_"
# Built-in fields and the run document's field for each.
BUILT_IN_FIELDS = {
    "WorkflowId": "workflow_id",
    "WorkflowType": "workflow_type",
    "RunId": "_id",
    "ExecutionStatus": "status",
    "StartTime": "start_time",
    "CloseTime": "close_time",
}
# Built-in fields an index of the runs collection serves by equality, most selective first.
INDEXED_BUILT_INS = ("RunId", "WorkflowId", "WorkflowType", "ExecutionStatus")
# Types whose equality an index serves on every server (FerretDB pushes down strings, bools, ints).
SEEDABLE_TYPES: frozenset[AttributeType] = frozenset({"Keyword", "Text", "Int", "Bool"})
# A query answered by more index reads than this is treated as not served (each seed is one read).
MAX_SEEDS = 100
# A namespace with more runs than this refuses a query no index serves (a scan of all of them).
MAX_UNSERVED_RUNS = 10_000
# The default order: newest first, ties by run id.
DEFAULT_ORDER = (Sort("StartTime", True),)


class UnservedQueryError(QueryError):
    """A query that only the namespace narrows, in a namespace too large to read whole."""

    def __init__(self, message: str) -> None:
        super().__init__("", 0, message)
        self.args = (f"query refused: {message}",)


def check_attribute_name(name: object) -> str:
    """A search attribute's name as workflow code upserts it; raises ValueError for one that cannot be
    a field of the run document."""
    if not isinstance(name, str) or not SEARCH_ATTRIBUTE_NAME.match(name):
        raise ValueError(
            f"search attribute name {name!r} must be 1-100 letters, digits or '_', not starting with a digit "
            "(no '.' or '$')"
        )
    return name


_INT64 = 2**63
# A value's text at most: each is copied into the run document and into its history.
MAX_ATTRIBUTE_TEXT_CHARS = 2048
MAX_ATTRIBUTE_LIST_ITEMS = 100


def check_attribute_value(name: str, value: object) -> object:
    """A search attribute's value as workflow code upserts it; raises ValueError for one the database
    cannot store (an int past 64 bits, text that is not UTF-8, a NaN) or one too big to copy into every
    write of the run."""

    def scalar(item: object) -> None:
        if isinstance(item, bool):
            return
        if isinstance(item, int):
            if not -_INT64 <= item < _INT64:
                raise ValueError(f"search attribute {name}: {item} does not fit in 64 bits")
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise ValueError(f"search attribute {name}: {item} is no number a query can compare")
        elif isinstance(item, str):
            if len(item) > MAX_ATTRIBUTE_TEXT_CHARS:
                raise ValueError(f"search attribute {name}: text over {MAX_ATTRIBUTE_TEXT_CHARS} characters")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"search attribute {name}: text that is not valid UTF-8") from None
        else:
            raise ValueError(f"search attribute {name}: {type(item).__name__} is no attribute value")

    if isinstance(value, list):
        if len(value) > MAX_ATTRIBUTE_LIST_ITEMS:
            raise ValueError(f"search attribute {name}: over {MAX_ATTRIBUTE_LIST_ITEMS} values")
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"search attribute {name}: a list holds text only")
            scalar(item)
    else:
        scalar(value)
    return value


def _as_time(value: object) -> datetime | None:
    """An ISO-8601 time with a zone written as a string, as a time (None for any other value)."""
    if not isinstance(value, str) or len(value) < 19 or value[4:5] != "-" or value[10:11] != "T":
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return None
        # A time near the ends of the calendar may not exist in UTC: it is then no time here, rather
        # than an error in the write of the run that set it.
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    # To the millisecond, as the database keeps it (the in-memory evaluator then compares the same).
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def attribute_fields(attributes: dict[str, Any]) -> Document:
    """The top-level fields of a run document that carry its search attributes."""
    fields: Document = {}
    for name, value in attributes.items():
        if not SEARCH_ATTRIBUTE_NAME.match(name):
            continue  # refused at upsert; a history from before that check is not indexed
        fields[ATTRIBUTE_PREFIX + name] = value
        # Null when it is no time: the write replaces the time an earlier value of it gave.
        fields[TIME_PREFIX + name] = _as_time(value)
    return fields


def document_field(field: str, attributes: dict[str, AttributeType]) -> str:
    """The run document's field that holds a query field."""
    if field in BUILT_IN_FIELDS:
        return BUILT_IN_FIELDS[field]
    if attributes.get(field) == "Datetime":
        return TIME_PREFIX + field
    return ATTRIBUTE_PREFIX + field


def attribute_index_keys(name: str, kind: AttributeType) -> list[tuple[str, int]]:
    """The keys of the runs index that serves a registered attribute."""
    field = (TIME_PREFIX if kind == "Datetime" else ATTRIBUTE_PREFIX) + name
    return [("namespace", 1), (field, 1), ("start_time", -1), ("_id", -1)]


# -- the MongoDB filter -------------------------------------------------------------------------------
def _stored(value: Value) -> Any:
    return value


def mongo_filter(condition: Condition | None, attributes: dict[str, AttributeType]) -> Document:
    """The filter of a condition (without the namespace)."""
    if condition is None:
        return {}
    if isinstance(condition, All):
        return {"$and": [mongo_filter(part, attributes) for part in condition.parts]}
    if isinstance(condition, AnyOf):
        return {"$or": [mongo_filter(part, attributes) for part in condition.parts]}
    field = document_field(condition.field, attributes)
    if isinstance(condition, Comparison):
        operator = {"=": "$eq", "!=": "$ne", "<": "$lt", ">": "$gt", "<=": "$lte", ">=": "$gte"}
        return {field: {operator[condition.operator]: _stored(condition.value)}}
    if isinstance(condition, Member):
        return {field: {"$nin" if condition.negated else "$in": [_stored(v) for v in condition.values]}}
    if isinstance(condition, Between):
        return {field: {"$gte": _stored(condition.low), "$lte": _stored(condition.high)}}
    assert isinstance(condition, StartsWith)
    return {field: {"$regex": "^" + re.escape(condition.prefix)}}


# -- the plan -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seed:
    """An index-served equality: every run the query matches satisfies at least one of the plan's."""

    field: str  # the run document's field
    value: Any

    def filter(self) -> Document:
        return {self.field: self.value}


def _seedable(field: str, attributes: dict[str, AttributeType]) -> bool:
    if field in BUILT_IN_FIELDS:
        return field in INDEXED_BUILT_INS
    return attributes.get(field) in SEEDABLE_TYPES


def _rank(field: str) -> int:
    """Lower for the fields that tend to narrow the most (registered attributes after ids)."""
    if field in ("RunId", "WorkflowId"):
        return 0
    if field in INDEXED_BUILT_INS:
        return 2 + INDEXED_BUILT_INS.index(field)
    return 1


def seeds_of(condition: Condition | None, attributes: dict[str, AttributeType]) -> list[Seed] | None:
    """The index-served equalities that together cover every run ``condition`` matches, or None if no
    index serves it (it is then answered by reading the namespace's runs)."""
    found = _seeds(condition, attributes)
    if found is None or len(found[0]) > MAX_SEEDS:
        return None
    return found[0]


def _seeds(
    condition: Condition | None, attributes: dict[str, AttributeType]
) -> tuple[list[Seed], int] | None:
    if condition is None:
        return None
    if isinstance(condition, All):
        options = [s for s in (_seeds(part, attributes) for part in condition.parts) if s is not None]
        if not options:
            return None
        return min(options, key=lambda option: (len(option[0]), option[1]))
    if isinstance(condition, AnyOf):
        branches = [_seeds(part, attributes) for part in condition.parts]
        if any(b is None for b in branches):
            return None
        seeds: list[Seed] = []
        for branch in branches:
            assert branch is not None
            seeds.extend(s for s in branch[0] if s not in seeds)
        return seeds, max(b[1] for b in branches if b is not None)
    if not _seedable(condition.field, attributes):
        return None
    field = document_field(condition.field, attributes)
    if isinstance(condition, Comparison) and condition.operator == "=":
        return [Seed(field, _stored(condition.value))], _rank(condition.field)
    if isinstance(condition, Member) and not condition.negated:
        unique: list[Seed] = []
        for value in condition.values:
            seed = Seed(field, _stored(value))
            if seed not in unique:
                unique.append(seed)
        return unique, _rank(condition.field)
    return None


def seed_filters(
    namespace: str, query: VisibilityQuery, attributes: dict[str, AttributeType]
) -> list[Document]:
    """The filters to read, one per seed, disjoint (each excludes the runs of the seeds before it), each
    with the namespace and its seed as top-level equalities (what an index serves) and the whole
    condition besides. None seeds: one filter, the namespace and the condition."""
    condition = mongo_filter(query.condition, attributes)
    seeds = seeds_of(query.condition, attributes)
    if seeds is None:
        return [{"namespace": namespace, **({"$and": [condition]} if condition else {})}]
    filters = []
    for index, seed in enumerate(seeds):
        document: Document = {"namespace": namespace, **seed.filter(), "$and": [condition]}
        if index:
            document["$nor"] = [earlier.filter() for earlier in seeds[:index]]
        filters.append(document)
    return filters


def unserved_message(namespace: str, bound: int, attributes: dict[str, AttributeType]) -> str:
    seedable = sorted(name for name, kind in attributes.items() if kind in SEEDABLE_TYPES)
    names = ", ".join([*seedable, "WorkflowType", "ExecutionStatus", "WorkflowId"])
    return (
        f"no index serves this query and namespace {namespace!r} holds more than {bound} runs; "
        f"add an equality (= or IN) on one of {names} to the query's conditions "
        "that every matching run must meet"
    )


# -- order --------------------------------------------------------------------------------------------
def order_of(query: VisibilityQuery) -> tuple[Sort, ...]:
    return query.order or DEFAULT_ORDER


def mongo_sort(order: tuple[Sort, ...], attributes: dict[str, AttributeType]) -> list[tuple[str, int]]:
    """The sort of a query's order, ties broken by run id (in the last key's direction)."""
    keys = [(document_field(s.field, attributes), -1 if s.descending else 1) for s in order]
    if not any(field == "_id" for field, _ in keys):
        keys.append(("_id", keys[-1][1] if keys else -1))
    return keys


def _sort_value(value: Any) -> tuple[int, Any]:
    # MongoDB's order of types: null, numbers, strings, arrays, booleans, dates.
    if value is None:
        return 0, 0
    if isinstance(value, bool):
        return 4, value
    if isinstance(value, int | float):
        return 1, value
    if isinstance(value, str):
        return 2, value
    if isinstance(value, list):
        return 3, str(value)
    if isinstance(value, datetime):
        return 5, value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return 6, str(value)


def sort_documents(documents: list[Document], keys: list[tuple[str, int]]) -> list[Document]:
    """Documents in the order of ``keys`` (as ``mongo_sort`` gives them), as the database sorts them."""
    ordered = list(documents)
    for field, direction in reversed(keys):
        ordered.sort(key=lambda d, f=field: _sort_value(d.get(f)), reverse=direction < 0)  # type: ignore[misc]
    return ordered
