"""Page tokens of visibility lists: what a list returns is read back, and anything else a client sends
is refused as a query error (never an error of the service)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from perdure.platform.core.visibility_query import QueryError
from perdure.platform.stores.run_search import _token, page_after, page_offset


def encoded(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def test_tokens_a_list_returns_are_read_back() -> None:
    moment = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert page_after(_token("after", [moment.isoformat(), "run-7"])) == (moment, "run-7")
    assert page_offset(_token("offset", 300)) == 300


@pytest.mark.parametrize(
    "token",
    [
        "",
        "%%%",
        "bm90IGpzb24=",  # base64 of "not json"
        encoded(["after"]),
        encoded(["after", ["yesterday", "r"]]),
        encoded(["after", ["2026-12-01T00:00:00", "r"]]),  # no zone
        encoded(["after", ["2026-12-01T00:00:00+00:00", 7]]),
        encoded(["after", ["2026-12-01T00:00:00+00:00", "r", "x"]]),
        encoded(["offset", 3]),
        encoded({"after": 1}),
        encoded(None),
    ],
)
def test_anything_else_is_a_query_error(token: str) -> None:
    with pytest.raises(QueryError, match="page token"):
        page_after(token)


@pytest.mark.parametrize(
    "token",
    ["", encoded(["offset", -1]), encoded(["offset", "3"]), encoded(["offset", True]), encoded(["after", 3])],
)
def test_offsets_are_checked_too(token: str) -> None:
    with pytest.raises(QueryError, match="page token"):
        page_offset(token)
