"""The visibility query language: what it accepts, what it means, and where it says a query is wrong."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perdure.platform.core.visibility_query import (
    All,
    AnyOf,
    AttributeType,
    Between,
    Comparison,
    Member,
    QueryError,
    Sort,
    StartsWith,
    VisibilityQuery,
    parse_query,
)

ATTRIBUTES: dict[str, AttributeType] = {
    "CustomerId": "Keyword",
    "Amount": "Int",
    "Score": "Double",
    "Vip": "Bool",
    "Note": "Text",
}


def test_the_issues_example_means_what_it_says() -> None:
    query = parse_query(
        "WorkflowType = 'Order' AND ExecutionStatus = 'Running' AND CustomerId = 'c-42' "
        "AND StartTime > '2026-12-01T00:00:00Z' ORDER BY StartTime DESC",
        ATTRIBUTES,
    )
    assert query == VisibilityQuery(
        All(
            (
                Comparison("WorkflowType", "=", "Order"),
                Comparison("ExecutionStatus", "=", "running"),
                Comparison("CustomerId", "=", "c-42"),
                Comparison("StartTime", ">", datetime(2026, 12, 1, tzinfo=UTC)),
            )
        ),
        (Sort("StartTime", descending=True),),
    )
    assert query.fields() == {"WorkflowType", "ExecutionStatus", "CustomerId", "StartTime"}


def test_and_binds_tighter_than_or_and_parentheses_say_otherwise() -> None:
    a, b, c = (Comparison(f, "=", "x") for f in ("WorkflowType", "WorkflowId", "RunId"))
    loose = parse_query("WorkflowType = 'x' or WorkflowId = 'x' AND RunId = 'x'")
    assert loose.condition == AnyOf((a, All((b, c))))
    grouped = parse_query("(WorkflowType = 'x' or WorkflowId = 'x') AND RunId = 'x'")
    assert grouped.condition == All((AnyOf((a, b)), c))


def test_every_form_and_type() -> None:
    query = parse_query(
        "Amount BETWEEN 10 AND 20 AND Score >= 0.5 AND Vip = true AND WorkflowId STARTS_WITH 'o-' "
        "AND CustomerId NOT IN ('a', \"b\") AND Note != 'it\\'s' ORDER BY Amount, StartTime asc",
        ATTRIBUTES,
    )
    assert query.condition == All(
        (
            Between("Amount", 10, 20),
            Comparison("Score", ">=", 0.5),
            Comparison("Vip", "=", True),
            StartsWith("WorkflowId", "o-"),
            Member("CustomerId", ("a", "b"), negated=True),
            Comparison("Note", "!=", "it's"),
        )
    )
    assert query.order == (Sort("Amount", False), Sort("StartTime", False))
    assert parse_query("") == VisibilityQuery(None, ())


@pytest.mark.parametrize(
    ("query", "column", "reason"),
    [
        ("WorkflowType = ", 16, "ends too soon"),
        ("WorkflowType == 'x'", 15, "unexpected '='"),
        ("Customer = 'x'", 1, "unknown field 'Customer'"),
        ("StartTime > 'yesterday'", 13, "is no time"),
        ("ExecutionStatus = 'Runing'", 19, "no ExecutionStatus"),
        ("Amount >= 3.5", 11, "holds Int values"),
        ("Amount = '3'", 10, "holds Int values"),
        ("Note > 'a'", 6, "compared with = or != only"),
        ("Vip STARTS_WITH 'a'", 1, "STARTS_WITH takes a Keyword field"),
        ("WorkflowType = 'a' AND (RunId = 'b'", 36, "ends too soon"),
        ("Amount = 3 $", 12, "unexpected character '$'"),
        ("ORDER BY Vip", 10, "not ordered by Vip"),
    ],
)
def test_a_bad_query_says_where_and_why(query: str, column: int, reason: str) -> None:
    with pytest.raises(QueryError) as error:
        parse_query(query, ATTRIBUTES)
    assert error.value.column == column and reason in error.value.reason, str(error.value)
    assert "^" in str(error.value)  # the caret under the place


def test_a_huge_query_is_refused_before_parsing() -> None:
    with pytest.raises(QueryError, match="longer than"):
        parse_query("WorkflowId = 'x' OR " * 1000 + "WorkflowId = 'y'")


@given(st.text(max_size=120))
def test_any_text_is_a_query_or_a_query_error(text: str) -> None:
    try:
        parse_query(text, ATTRIBUTES)
    except QueryError:
        pass


def test_deeply_nested_parentheses_parse_without_exhausting_the_stack() -> None:
    depth = 1500  # as deep as the length limit allows
    query = parse_query("(" * depth + "WorkflowId = 'x'" + ")" * depth)
    assert query.condition == Comparison("WorkflowId", "=", "x")
