"""Visibility queries over a namespace's runs: list (in the query's order, page after page), count,
and the keyset walk batch operations take over the matching runs.

Each query is read as its plan says (``platform/core/visibility_plan.py``): one index-served read per
seed, disjoint, merged in the query's order. A query no index serves is read from the namespace's runs
only while the namespace holds at most ``max_unserved_runs`` of them; beyond that it is refused with
``UnservedQueryError``, which says what to add.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.cursor import AsyncCursor

from perdure.platform.core.visibility_plan import (
    DEFAULT_ORDER,
    MAX_UNSERVED_RUNS,
    UnservedQueryError,
    mongo_sort,
    order_of,
    seed_filters,
    seeds_of,
    sort_documents,
    unserved_message,
)
from perdure.platform.core.visibility_query import QueryError, VisibilityQuery
from perdure.platform.stores.run_store import RunStore

Document = dict[str, Any]
# What a listed run carries (its state, tail and outbox stay in the database).
PROJECTION = {"state": 0, "tail": 0, "outbox": 0}
# How deep a list in an order other than the default may page (it pages by offset).
MAX_OFFSET = 10_000
# Rows one page may read over all its seeds' reads (each reads up to the page's size, or its depth in
# an offset order): a query of many equalities gets smaller pages, or pages less deep, instead of
# making each page read seeds x size rows.
MAX_ROWS_READ = 25_000
# Runs a list in an order other than the default may match: the database sorts them all for each page.
MAX_SORTED_RUNS = 10_000


@dataclass(frozen=True)
class SearchPage:
    runs: list[Document]
    next_page_token: str | None  # None: this page is the last


async def _check_served(store: RunStore, namespace: str, query: VisibilityQuery, bound: int) -> None:
    if query.condition is None or seeds_of(query.condition, query.attributes) is not None:
        return
    runs = await store.runs.count_documents({"namespace": namespace}, limit=bound + 1)
    if runs > bound:
        raise UnservedQueryError(unserved_message(namespace, bound, query.attributes))


def _find(
    store: RunStore, condition: Document, keys: list[tuple[str, int]], limit: int
) -> AsyncCursor[Document]:
    return store.runs.find(condition, PROJECTION).sort(keys).limit(limit)


def _with(condition: Document, extra: Document) -> Document:
    """``condition`` with one more conjunct, kept inside ``$and`` so its top-level equalities stay the
    ones an index serves."""
    return {**condition, "$and": [*condition.get("$and", []), extra]}


async def matching_runs(
    store: RunStore,
    namespace: str,
    query: VisibilityQuery,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
    max_unserved_runs: int = MAX_UNSERVED_RUNS,
) -> list[Document]:
    """Runs of ``namespace`` matching ``query``, newest first by (start_time, run _id) descending, the
    ``limit`` that follow ``after`` (keyset); the query's ORDER BY is not used. Raises ``QueryError``
    (``UnservedQueryError``) for a query no index serves in a namespace over the bound."""
    await _check_served(store, namespace, query, max_unserved_runs)
    keys = mongo_sort(DEFAULT_ORDER, query.attributes)
    filters = seed_filters(namespace, query, query.attributes)
    limit = min(limit, page_bound(len(filters)))
    if after is not None:
        moment, run_id = after
        beyond = {"$or": [{"start_time": {"$lt": moment}}, {"start_time": moment, "_id": {"$lt": run_id}}]}
        filters = [_with(f, beyond) for f in filters]
    found: list[Document] = []
    for condition in filters:
        found.extend([d async for d in _find(store, condition, keys, limit)])
    return sort_documents(found, keys)[:limit]


async def count_runs(
    store: RunStore, namespace: str, query: VisibilityQuery, *, max_unserved_runs: int = MAX_UNSERVED_RUNS
) -> int:
    """How many runs of ``namespace`` match ``query`` (the seeds' reads are disjoint: each run counts
    once)."""
    await _check_served(store, namespace, query, max_unserved_runs)
    total = 0
    for condition in seed_filters(namespace, query, query.attributes):
        total += await store.runs.count_documents(condition)
    return total


def page_bound(reads: int) -> int:
    """The most runs a page of a query read in ``reads`` seeds' reads may hold (it may hold fewer
    than asked for; the next page token goes on from it)."""
    return max(1, MAX_ROWS_READ // max(1, reads))


async def _check_sortable(store: RunStore, filters: list[Document]) -> None:
    """Refuse a list in an order no index keeps once it matches more runs than may be sorted for a
    page: the count stops at the bound, so the check reads at most that many."""
    left = MAX_SORTED_RUNS
    for condition in filters:
        left -= await store.runs.count_documents(condition, limit=left + 1)
        if left < 0:
            raise QueryError(
                "",
                0,
                f"more than {MAX_SORTED_RUNS} runs match a list ordered by other than StartTime DESC "
                "(each page would sort them all): narrow the query, or list it in the default order",
            )


def _token(kind: str, value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, value]).encode()).decode()


def _bad_token() -> QueryError:
    return QueryError("", 0, "the page token is not one that a list in this order returned")


def page_after(token: str) -> tuple[datetime, str]:
    """The start time and run id a keyset page token names; ``QueryError`` for any other token (a
    client's token is the client's input: nothing in it is trusted)."""
    try:
        kind, (moment, run_id) = json.loads(base64.urlsafe_b64decode(token.encode()))
        after = datetime.fromisoformat(moment)
    except (ValueError, TypeError):
        raise _bad_token() from None
    if kind != "after" or not isinstance(run_id, str) or after.tzinfo is None:
        raise _bad_token()
    return after, run_id


def page_offset(token: str) -> int:
    """The offset an offset page token names; ``QueryError`` for any other token."""
    try:
        kind, offset = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise _bad_token() from None
    if kind != "offset" or type(offset) is not int or offset < 0:
        raise _bad_token()
    return offset


async def search_runs(
    store: RunStore,
    namespace: str,
    query: VisibilityQuery,
    *,
    page_token: str | None = None,
    limit: int = 100,
    max_unserved_runs: int = MAX_UNSERVED_RUNS,
) -> SearchPage:
    """A page of the runs of ``namespace`` matching ``query`` in its ORDER BY (newest first without
    one), and the token of the next page. The default order pages by keyset; any other by offset, up
    to ``MAX_OFFSET`` runs deep."""
    if order_of(query) == DEFAULT_ORDER:
        after = page_after(page_token) if page_token is not None else None
        # One run more than the page, to know whether another follows; fewer when many seeds are read.
        limit = min(limit, page_bound(len(seeds_of(query.condition, query.attributes) or [None])) - 1)
        limit = max(1, limit)
        runs = await matching_runs(
            store, namespace, query, after=after, limit=limit + 1, max_unserved_runs=max_unserved_runs
        )
        if len(runs) <= limit:
            return SearchPage(runs, None)
        last = runs[limit - 1]
        return SearchPage(runs[:limit], _token("after", [last["start_time"].isoformat(), last["_id"]]))
    offset = page_offset(page_token) if page_token is not None else 0
    filters = seed_filters(namespace, query, query.attributes)
    deepest = min(MAX_OFFSET, page_bound(len(filters)) - 1)
    if offset + limit > deepest:
        raise QueryError(
            "", 0, f"a list in an order other than StartTime DESC pages {deepest} runs deep at most"
        )
    await _check_served(store, namespace, query, max_unserved_runs)
    await _check_sortable(store, filters)
    keys = mongo_sort(order_of(query), query.attributes)
    found: list[Document] = []
    for condition in filters:
        found.extend([d async for d in _find(store, condition, keys, offset + limit + 1)])
    ordered = sort_documents(found, keys)[offset:]
    if len(ordered) <= limit:
        return SearchPage(ordered, None)
    return SearchPage(ordered[:limit], _token("offset", offset + limit))


async def explain_runs(store: RunStore, namespace: str, query: VisibilityQuery) -> list[Document]:
    """The database's plan of each read a list of ``query`` makes (newest first)."""
    keys = mongo_sort(DEFAULT_ORDER, query.attributes)
    return [
        await _find(store, f, keys, 100).explain() for f in seed_filters(namespace, query, query.attributes)
    ]
