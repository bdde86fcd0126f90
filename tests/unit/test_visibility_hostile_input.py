"""Visibility queries under hostile input and at their bounds: what a tenant may send is refused as a
query error (never an error of the service, which would hand its request back forever), the run write
never fails over an attribute's value, the evaluator compares times as the database keeps them, and a
page's reads stay bounded whatever the query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest

from perdure.platform.core.visibility_match import matches, run_document
from perdure.platform.core.visibility_plan import attribute_fields, check_attribute_value, seed_filters
from perdure.platform.core.visibility_query import AttributeType, QueryError, parse_query
from perdure.platform.stores import run_search
from perdure.platform.stores.run_search import MAX_ROWS_READ, MAX_SORTED_RUNS, search_runs

ATTRIBUTES: dict[str, AttributeType] = {
    "A": "Int",
    "Amount": "Int",
    "CustomerId": "Keyword",
    "DueAt": "Datetime",
}
START = datetime(2026, 12, 1, tzinfo=UTC)


def nested(levels: int) -> str:
    query = "A=1"
    for level in range(levels):
        query = f"(A=1 {'OR' if level % 2 else 'AND'} {query})"
    return query


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (nested(400), "nest more than 16 levels deep"),  # was a RecursionError
        ("Amount = 9223372036854775808", "beyond what an Int holds"),  # was an OverflowError in bson
        ("Amount IN (1, -9223372036854775809)", "beyond what an Int holds"),
        ("CustomerId = '\ud800'", "no text"),  # was a UnicodeEncodeError in bson
        ("DueAt < '9999-12-31T23:59:59-05:00'", "out of range once in UTC"),  # was an OverflowError
        ("DueAt > '0001-01-01T00:00:00+05:00'", "out of range once in UTC"),
    ],
)
def test_what_the_database_cannot_be_sent_is_a_query_error(query: str, message: str) -> None:
    with pytest.raises(QueryError, match=message) as caught:
        parse_query(query, ATTRIBUTES)
    str(caught.value).encode("utf-8")  # the answer carrying it can be sent


def test_parentheses_in_strings_and_the_int_bounds_are_accepted() -> None:
    parse_query(
        "CustomerId = '((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((('", ATTRIBUTES
    )
    parse_query("CustomerId = 'it\\'s ((((' AND Amount = 1", ATTRIBUTES)
    parse_query("Amount BETWEEN -9223372036854775808 AND 9223372036854775807", ATTRIBUTES)


@pytest.mark.parametrize(
    "value", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "2026-13-01T00:00:00+00:00"]
)
def test_an_attribute_that_is_no_time_in_utc_does_not_break_the_run_write(value: str) -> None:
    fields = attribute_fields({"DueAt": value})  # raised OverflowError: the run's every write failed
    assert fields == {"sa_DueAt": value, "st_DueAt": None}
    bson.encode(fields)


def test_times_compare_to_the_millisecond_as_the_database_keeps_them() -> None:
    # The database keeps 10:00:00.123 of both; the evaluator compared the microseconds and disagreed.
    document = run_document(
        run_id="r1",
        workflow_id="w1",
        workflow_type="Order",
        status="running",
        start_time=START + timedelta(microseconds=123_456),
        close_time=None,
        search_attributes={"DueAt": "2026-12-01T10:00:00.123456+00:00"},
    )
    assert document["st_DueAt"] == datetime(2026, 12, 1, 10, 0, 0, 123_000, tzinfo=UTC)

    def holds(text: str) -> bool:
        query = parse_query(text, ATTRIBUTES)
        return matches(document, query.condition, query.attributes)

    assert holds("DueAt >= '2026-12-01T10:00:00.123999+00:00'")
    assert holds("DueAt = '2026-12-01T12:00:00.123+02:00'")
    assert holds("StartTime <= '2026-12-01T00:00:00.123001Z'")
    assert not holds("StartTime > '2026-12-01T00:00:00.123999Z'")


class _Cursor:
    def __init__(self, documents: list[dict[str, Any]], reads: list[int]) -> None:
        self.documents, self.reads = documents, reads

    def sort(self, keys: Any) -> _Cursor:
        return self

    def limit(self, limit: int) -> _Cursor:
        self.reads.append(limit)
        return self

    def __aiter__(self) -> Any:
        async def each() -> Any:
            for document in self.documents[: self.reads[-1]]:
                yield document

        return each()


class _Runs:
    """A runs collection whose every read matches ``matching`` runs (it records what each read may
    return, and the counts asked)."""

    def __init__(self, matching: int) -> None:
        self.matching = matching
        self.reads: list[int] = []
        self.counted: list[int | None] = []

    def find(self, condition: dict[str, Any], projection: Any = None) -> _Cursor:
        documents = [
            {"_id": f"{id(condition)}-{n:06d}", "start_time": START - timedelta(seconds=n)}
            for n in range(min(self.matching, 30_000))
        ]
        return _Cursor(documents, self.reads)

    async def count_documents(self, condition: dict[str, Any], limit: int | None = None) -> int:
        self.counted.append(limit)
        return self.matching if limit is None else min(self.matching, limit)


class _Store:
    def __init__(self, matching: int) -> None:
        self.runs = _Runs(matching)


def _in_query(values: int) -> str:
    return "CustomerId IN (" + ", ".join(f"'c{n}'" for n in range(values)) + ")"


async def test_a_page_of_many_seeds_reads_a_bounded_number_of_rows() -> None:
    store = _Store(matching=5_000)
    query = parse_query(_in_query(100), ATTRIBUTES)
    assert len(seed_filters("ns", query, ATTRIBUTES)) == 100
    page = await search_runs(store, "ns", query, limit=1000)  # type: ignore[arg-type]
    assert sum(store.runs.reads) <= MAX_ROWS_READ  # was 100 reads of 1,001 rows each
    assert page.runs and page.next_page_token is not None  # a smaller page, and the list goes on


async def test_an_offset_list_of_many_seeds_pages_less_deep() -> None:
    store = _Store(matching=50)
    query = parse_query(_in_query(100) + " ORDER BY Amount", ATTRIBUTES)
    token = run_search._token("offset", 9_000)
    with pytest.raises(QueryError, match="runs deep at most"):  # was 100 reads of 9,101 rows each
        await search_runs(store, "ns", query, page_token=token)  # type: ignore[arg-type]
    assert store.runs.reads == []


async def test_a_list_in_another_order_that_matches_too_many_runs_is_refused() -> None:
    store = _Store(matching=1_000_000)
    for text in ["ORDER BY WorkflowId", "CustomerId = 'c-1' ORDER BY Amount DESC"]:
        query = parse_query(text, ATTRIBUTES)
        with pytest.raises(QueryError, match=f"more than {MAX_SORTED_RUNS} runs match"):
            await search_runs(store, "ns", query)  # type: ignore[arg-type]
    # The check counts no further than the bound; nothing was sorted.
    assert store.runs.counted and all(c is not None and c <= MAX_SORTED_RUNS + 1 for c in store.runs.counted)
    assert store.runs.reads == []


async def test_a_list_in_another_order_that_matches_few_runs_is_answered() -> None:
    store = _Store(matching=30)
    query = parse_query("CustomerId = 'c-1' ORDER BY Amount DESC", ATTRIBUTES)
    page = await search_runs(store, "ns", query, limit=10)  # type: ignore[arg-type]
    assert len(page.runs) == 10 and page.next_page_token is not None


@pytest.mark.parametrize(
    "value",
    [2**63, -(2**63) - 1, "\ud800", float("nan"), "x" * 5000, ["a"] * 101, [1], {"a": 1}],
)
def test_an_attribute_value_the_database_cannot_store_is_refused_at_the_upsert(value: object) -> None:
    with pytest.raises(ValueError, match="search attribute Amount"):
        check_attribute_value("Amount", value)


def test_attribute_values_a_run_may_hold_pass_unchanged() -> None:
    for value in (2**63 - 1, -(2**63), 1.5, True, "c-42", ["a", "b"], "2026-12-01T00:00:00Z"):
        assert check_attribute_value("Amount", value) == value
