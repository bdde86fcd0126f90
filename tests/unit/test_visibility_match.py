"""The in-memory evaluator of visibility queries (LocalEnvironment's, and the tests' expectation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from perdure.platform.core.visibility_match import matches, run_document, select
from perdure.platform.core.visibility_query import AttributeType, parse_query

ATTRIBUTES: dict[str, AttributeType] = {
    "CustomerId": "Keyword",
    "Amount": "Int",
    "Score": "Double",
    "Vip": "Bool",
    "DueAt": "Datetime",
    "Tags": "Keyword",
}
START = datetime(2026, 12, 1, tzinfo=UTC)


def run(run_id: str, seconds: int = 0, status: str = "running", **attributes: Any) -> dict[str, Any]:
    return run_document(
        run_id=run_id,
        workflow_id=f"wf-{run_id}",
        workflow_type="Order",
        status=status,
        start_time=START + timedelta(seconds=seconds),
        close_time=None if status == "running" else START + timedelta(seconds=seconds + 5),
        search_attributes=attributes,
    )


def holds(text: str, document: dict[str, Any]) -> bool:
    query = parse_query(text, ATTRIBUTES)
    return matches(document, query.condition, query.attributes)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CustomerId = 'c-42'", True),
        ("CustomerId = 'c-43'", False),
        ("CustomerId != 'c-43'", True),
        ("Amount > 9", True),
        ("Amount >= 10 AND Amount <= 10", True),
        ("Amount < 10", False),
        ("Amount BETWEEN 1 AND 10", True),
        ("Amount IN (1, 10)", True),
        ("Amount NOT IN (1, 10)", False),
        ("Score > 1", True),  # an Int and a Double compare as numbers
        ("Vip = true", True),
        ("Vip = false", False),
        ("CustomerId STARTS_WITH 'c-4'", True),
        ("CustomerId STARTS_WITH 'C'", False),
        ("Tags = 'blue'", True),  # a list holds each of its values
        ("Tags STARTS_WITH 're'", True),
        ("Tags != 'blue'", False),
        ("DueAt > '2026-12-24T00:00:00+02:00'", True),  # compared as times, whatever the zone
        ("DueAt > '2026-12-24T00:00:00Z'", False),
        ("StartTime = '2026-12-01T00:00:00Z' AND ExecutionStatus = 'Running'", True),
        ("CloseTime > '2020-01-01T00:00:00Z'", False),  # a running run has no close time
        ("WorkflowType = 'Refund' OR (WorkflowId = 'wf-r' AND RunId = 'r')", True),
    ],
)
def test_conditions(text: str, expected: bool) -> None:
    document = run(
        "r",
        CustomerId="c-42",
        Amount=10,
        Score=1.5,
        Vip=True,
        Tags=["red", "blue"],
        DueAt="2026-12-23T23:00:00Z",
    )
    assert holds(text, document) is expected


def test_missing_attributes_match_only_negations() -> None:
    bare = run("r")
    assert not holds("CustomerId = 'x'", bare)
    assert holds("CustomerId != 'x'", bare)
    assert holds("CustomerId NOT IN ('x')", bare)
    assert not holds("Amount < 100", bare)
    assert not holds("Amount > -100", bare)


def test_values_of_another_kind_never_compare() -> None:
    odd = run("r", Amount="10", Vip=1)
    assert not holds("Amount = 10", odd)
    assert not holds("Amount < 100", odd)
    assert not holds("Vip = true", odd)


def test_select_filters_and_orders() -> None:
    documents = [run(f"r{i}", seconds=i % 3, Amount=i) for i in range(6)]
    newest = select(documents, parse_query("Amount >= 1", ATTRIBUTES))
    assert [d["_id"] for d in newest] == ["r5", "r2", "r4", "r1", "r3"]
    by_amount = select(documents, parse_query("Amount < 4 ORDER BY Amount DESC", ATTRIBUTES))
    assert [d["_id"] for d in by_amount] == ["r3", "r2", "r1", "r0"]
