"""Which index reads answer a visibility query, the filter it becomes, and the order runs come in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from perdure.platform.core.visibility_plan import (
    Seed,
    UnservedQueryError,
    attribute_fields,
    attribute_index_keys,
    check_attribute_name,
    mongo_filter,
    mongo_sort,
    order_of,
    seed_filters,
    seeds_of,
    sort_documents,
    unserved_message,
)
from perdure.platform.core.visibility_query import AttributeType, QueryError, parse_query

ATTRIBUTES: dict[str, AttributeType] = {
    "CustomerId": "Keyword",
    "Amount": "Int",
    "Score": "Double",
    "Vip": "Bool",
    "DueAt": "Datetime",
}


def seeds(text: str) -> list[Seed] | None:
    query = parse_query(text, ATTRIBUTES)
    return seeds_of(query.condition, query.attributes)


def test_an_equality_on_a_registered_attribute_is_served_by_its_index() -> None:
    assert seeds("CustomerId = 'c-42' AND StartTime > '2026-12-01T00:00:00Z'") == [
        Seed("sa_CustomerId", "c-42")
    ]


def test_the_narrowest_served_conjunct_is_chosen() -> None:
    text = "WorkflowType = 'Order' AND ExecutionStatus = 'Running' AND CustomerId = 'c-42'"
    assert seeds(text) == [Seed("sa_CustomerId", "c-42")]
    assert seeds("ExecutionStatus = 'Running' AND WorkflowType = 'Order'") == [Seed("workflow_type", "Order")]
    assert seeds("CustomerId IN ('a', 'b') AND WorkflowId = 'w'") == [Seed("workflow_id", "w")]
    assert seeds("RunId = 'r-1'") == [Seed("_id", "r-1")]


def test_in_and_or_are_served_when_every_branch_is() -> None:
    assert seeds("CustomerId IN ('a', 'b', 'a')") == [Seed("sa_CustomerId", "a"), Seed("sa_CustomerId", "b")]
    assert seeds("CustomerId = 'a' OR WorkflowType = 'Order'") == [
        Seed("sa_CustomerId", "a"),
        Seed("workflow_type", "Order"),
    ]
    assert seeds("CustomerId = 'a' OR Amount > 3") is None
    assert seeds("(CustomerId = 'a' OR Vip = true) AND Score > 1.5") == [
        Seed("sa_CustomerId", "a"),
        Seed("sa_Vip", True),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "StartTime > '2026-12-01T00:00:00Z'",
        "CustomerId != 'a'",
        "CustomerId NOT IN ('a')",
        "CustomerId STARTS_WITH 'c-'",
        "Amount BETWEEN 1 AND 5",
        "Score = 1.5",  # a Double's equality reaches no index on FerretDB
        "DueAt = '2026-12-01T00:00:00Z'",
        "WorkflowId > 'a'",
    ],
)
def test_conditions_no_index_serves(text: str) -> None:
    assert seeds(text) is None


def test_too_many_seeds_are_not_served() -> None:
    values = ", ".join(f"'v{i}'" for i in range(101))
    assert seeds(f"CustomerId IN ({values})") is None


def test_seed_filters_keep_namespace_and_seed_top_level_and_are_disjoint() -> None:
    query = parse_query("CustomerId IN ('a', 'b') AND Amount > 3", ATTRIBUTES)
    first, second = seed_filters("ns", query, query.attributes)
    condition = {"$and": [{"sa_CustomerId": {"$in": ["a", "b"]}}, {"sa_Amount": {"$gt": 3}}]}
    assert first == {"namespace": "ns", "sa_CustomerId": "a", "$and": [condition]}
    assert second == {
        "namespace": "ns",
        "sa_CustomerId": "b",
        "$and": [condition],
        "$nor": [{"sa_CustomerId": "a"}],
    }
    unserved = parse_query("Amount > 3", ATTRIBUTES)
    assert seed_filters("ns", unserved, unserved.attributes) == [
        {"namespace": "ns", "$and": [{"sa_Amount": {"$gt": 3}}]}
    ]
    everything = parse_query("", ATTRIBUTES)
    assert seed_filters("ns", everything, everything.attributes) == [{"namespace": "ns"}]


def test_mongo_filter_of_each_operator() -> None:
    def translated(text: str) -> object:
        query = parse_query(text, ATTRIBUTES)
        return mongo_filter(query.condition, query.attributes)

    assert translated("ExecutionStatus = 'Running'") == {"status": {"$eq": "running"}}
    assert translated("CustomerId != 'a'") == {"sa_CustomerId": {"$ne": "a"}}
    assert translated("Amount NOT IN (1, 2)") == {"sa_Amount": {"$nin": [1, 2]}}
    assert translated("Amount BETWEEN 1 AND 5") == {"sa_Amount": {"$gte": 1, "$lte": 5}}
    assert translated("CustomerId STARTS_WITH 'c.1*'") == {"sa_CustomerId": {"$regex": r"^c\.1\*"}}
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    assert translated("DueAt >= '2026-12-01T00:00:00Z'") == {"st_DueAt": {"$gte": moment}}
    assert translated("CloseTime < '2026-12-01T00:00:00+00:00'") == {"close_time": {"$lt": moment}}
    assert translated("(Vip = true OR Amount <= 2) AND WorkflowId = 'w'") == {
        "$and": [
            {"$or": [{"sa_Vip": {"$eq": True}}, {"sa_Amount": {"$lte": 2}}]},
            {"workflow_id": {"$eq": "w"}},
        ]
    }


def test_attribute_fields_are_top_level_copies_with_times_also_as_times() -> None:
    fields = attribute_fields(
        {"CustomerId": "c-1", "DueAt": "2026-12-01T01:00:00+01:00", "Tags": ["x"], "Day": "2026-12-01"}
    )
    assert fields == {
        "sa_CustomerId": "c-1",
        "st_CustomerId": None,
        "sa_DueAt": "2026-12-01T01:00:00+01:00",
        "st_DueAt": datetime(2026, 12, 1, tzinfo=UTC),
        "sa_Tags": ["x"],
        "st_Tags": None,
        "sa_Day": "2026-12-01",  # no time of day, no zone: not a time
        "st_Day": None,
    }
    assert attribute_fields({"a.b": 1, "$x": 2}) == {}


@pytest.mark.parametrize("name", ["a.b", "$set", "", "1st", "x" * 101, 7])
def test_attribute_names_that_cannot_be_fields_are_refused(name: object) -> None:
    with pytest.raises(ValueError, match="search attribute name"):
        check_attribute_name(name)
    assert check_attribute_name("Customer_Id2") == "Customer_Id2"


def test_index_keys() -> None:
    assert attribute_index_keys("CustomerId", "Keyword") == [
        ("namespace", 1),
        ("sa_CustomerId", 1),
        ("start_time", -1),
        ("_id", -1),
    ]
    assert attribute_index_keys("DueAt", "Datetime")[1] == ("st_DueAt", 1)


def test_sort_follows_the_order_by_with_run_id_ties() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    documents = [
        {"_id": "r1", "start_time": start, "sa_Amount": 2},
        {"_id": "r2", "start_time": start, "sa_Amount": None},
        {"_id": "r3", "start_time": start + timedelta(seconds=1), "sa_Amount": 2},
        {"_id": "r4", "start_time": start.replace(tzinfo=None), "sa_Amount": 1},
    ]
    newest = parse_query("", ATTRIBUTES)
    keys = mongo_sort(order_of(newest), newest.attributes)
    assert keys == [("start_time", -1), ("_id", -1)]
    assert [d["_id"] for d in sort_documents(documents, keys)] == ["r3", "r4", "r2", "r1"]
    by_amount = parse_query("ORDER BY Amount ASC, StartTime DESC", ATTRIBUTES)
    keys = mongo_sort(by_amount.order, by_amount.attributes)
    assert keys == [("sa_Amount", 1), ("start_time", -1), ("_id", -1)]
    assert [d["_id"] for d in sort_documents(documents, keys)] == ["r2", "r4", "r3", "r1"]


def test_the_refusal_says_what_to_add() -> None:
    error = UnservedQueryError(unserved_message("shop", 10_000, ATTRIBUTES))
    text = str(error)
    assert text.startswith("query refused: no index serves this query")
    assert "'shop'" in text and "10000 runs" in text
    assert "CustomerId" in text and "WorkflowType" in text and "Score" not in text


def test_deep_nesting_is_refused_before_it_reaches_the_database() -> None:
    with pytest.raises(QueryError, match="nest more than 16 levels deep"):
        parse_query("(" * 17 + "Amount = 1" + " OR Amount = 2)" * 17, ATTRIBUTES)
    shallow = "(" * 15 + "Amount = 1" + " OR Amount = 2)" * 15
    assert parse_query(shallow, ATTRIBUTES).condition is not None
    long_and_deep = "(" * 300 + "A = 1" + " OR A = 2)" * 300
    assert len(long_and_deep) < 4000
    with pytest.raises(QueryError, match="nest more than"):
        parse_query(long_and_deep, {"A": "Int"})
