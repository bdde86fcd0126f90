"""Visibility under a hostile tenant, on the real stack: queries the database cannot be sent are
answered as malformed at once (not handed back to admission forever, the client waiting out its
timeout), and a run whose search attribute looks like a time beyond UTC's calendar is written like any
other (its write failed, with every run written in the same batch)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from perdure.platform.core.visibility_query import AttributeType
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.run_store import RunStore
from perdure.platform.stores.search_attributes import register_search_attribute
from perdure.platform.tenancy.model import Quota
from perdure.tenants import MalformedRequestError
from perdure.tenants.client import Client

from .cell_harness import TenantCell
from .conftest import TenantCellFactory
from .visibility_app import Order

# "A": a name short enough for a query of 4,000 characters to nest 400 groups.
ATTRIBUTES: dict[str, AttributeType] = {"CustomerId": "Keyword", "Amount": "Int", "A": "Int"}


@pytest.fixture
async def tenants(make_tenant_cell: TenantCellFactory) -> TenantCell:
    return await make_tenant_cell({"a": Quota()}, apps={"a": "tests.integration.visibility_app:app"})


@pytest.fixture
async def store(tenants: TenantCell) -> AsyncIterator[RunStore]:
    settings = tenants.cell.settings
    databases = Databases.connect(settings)
    try:
        for name, kind in ATTRIBUTES.items():
            await register_search_attribute(
                databases.control,
                databases.runs(settings, tenants.cell.cell),
                tenants.a.record.name,
                name,
                kind,
            )
        yield databases.runs(settings, tenants.cell.cell)
    finally:
        await databases.close()


def _nested(levels: int) -> str:
    query = "A=1"
    for level in range(levels):
        query = f"(A=1 {'OR' if level % 2 else 'AND'} {query})"
    assert len(query) <= 4000
    return query


async def test_hostile_queries_are_answered_malformed_and_odd_times_are_written(
    tenants: TenantCell, store: RunStore
) -> None:
    async with await Client.connect(tenants.connection_string("a"), request_timeout=20) as client:
        began = time.monotonic()
        for query, message in [
            ("Amount = 99999999999999999999", "beyond what an Int holds"),
            (_nested(400), "nest more than 16 levels deep"),
        ]:
            with pytest.raises(MalformedRequestError, match=message):
                await client.count_workflows(query)
            with pytest.raises(MalformedRequestError, match=message):
                await client.list_workflows(query=query)
        assert time.monotonic() - began < 10  # answered, not retried until the client gave up

        # A time that is none in UTC, as a search attribute: the run's write goes through, and the runs
        # after it too.
        odd = await client.start_workflow(Order.run, "9999-12-31T23:59:59-05:00", 1, id="odd")
        assert await odd.result(timeout=60) == "9999-12-31T23:59:59-05:00:1"
        plain = await client.start_workflow(Order.run, "c-1", 2, id="plain")
        assert await plain.result(timeout=60) == "c-1:2"
        found = await client.list_workflows(query="CustomerId = '9999-12-31T23:59:59-05:00'")
        assert [r["workflow_id"] for r in found] == ["odd"]
        document = await store.runs.find_one({"namespace": tenants.a.record.name, "workflow_id": "odd"})
        assert document is not None and document["st_CustomerId"] is None
