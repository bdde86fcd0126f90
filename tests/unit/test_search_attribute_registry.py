"""What a namespace may register as a search attribute."""

from __future__ import annotations

import pytest

from perdure.platform.core.search_attribute_registry import (
    MAX_ATTRIBUTES,
    RegistrationError,
    check_registration,
)
from perdure.platform.core.visibility_query import AttributeType


def test_a_new_attribute_is_registered_and_the_same_again_is_no_change() -> None:
    assert check_registration({}, "CustomerId", "Keyword") is True
    assert check_registration({"CustomerId": "Keyword"}, "CustomerId", "Keyword") is False


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("Customer.Id", "Keyword", "letters, digits"),
        ("$where", "Keyword", "letters, digits"),
        ("9lives", "Int", "letters, digits"),
        ("WorkflowType", "Keyword", "reserved"),
        ("ExecutionStatus", "Keyword", "reserved"),
        ("TaskQueue", "Keyword", "reserved"),
        ("TemporalAnything", "Keyword", "reserved"),
        ("Order", "Keyword", "word of the query language"),
        ("between", "Int", "word of the query language"),
        ("Amount", "Integer", "none of Keyword, Text, Int, Double, Bool, Datetime"),
        ("CustomerId", "Int", "registered already, as Keyword"),
    ],
)
def test_refusals(name: str, kind: str, reason: str) -> None:
    with pytest.raises(RegistrationError, match=reason):
        check_registration({"CustomerId": "Keyword"}, name, kind)


def test_a_namespace_registers_a_bounded_number() -> None:
    full: dict[str, AttributeType] = {f"A{i}": "Keyword" for i in range(MAX_ATTRIBUTES)}
    with pytest.raises(RegistrationError, match=f"at most {MAX_ATTRIBUTES}"):
        check_registration(full, "OneMore", "Keyword")
    assert check_registration(full, "A3", "Keyword") is False
