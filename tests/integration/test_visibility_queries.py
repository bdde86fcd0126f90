"""Visibility queries over registered search attributes on the real stack (issue 15, part 4): 2,000 runs
of a namespace found by a query that an index answers, counted, paged, refused when no index serves
them in a large namespace, with errors that point at the token; one tenant never sees another's runs."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from perdure.platform.core.run_state import RunState, RunStatus
from perdure.platform.core.visibility_match import run_document, select
from perdure.platform.core.visibility_query import AttributeType, parse_query
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.run_bodies import state_of
from perdure.platform.stores.run_search import count_runs, explain_runs, matching_runs, search_runs
from perdure.platform.stores.run_store import RunEntry, RunStore
from perdure.platform.stores.search_attributes import index_search_attribute, register_search_attribute
from perdure.platform.tenancy.model import Quota
from perdure.tenants import MalformedRequestError
from perdure.tenants.client import Client

from .cell_harness import TenantCell, run_perdure
from .conftest import TenantCellFactory
from .visibility_app import Order

RUNS = 2_000
BOUND = 1_000  # the cell refuses unserved queries in namespaces over this many runs
START = datetime(2026, 12, 1, tzinfo=UTC)
STATUSES: tuple[RunStatus, ...] = ("running", "completed", "failed")
ATTRIBUTES: dict[str, AttributeType] = {"CustomerId": "Keyword", "Amount": "Int"}
# How each server names a plan that reads an index, and one that reads the whole collection.
INDEX_MARKERS = ("IXSCAN", "Index Scan", "Index Only Scan")
SCAN_MARKERS = ("COLLSCAN", "Seq Scan")


@pytest.fixture
async def tenants(make_tenant_cell: TenantCellFactory) -> TenantCell:
    app = "tests.integration.visibility_app:app"
    return await make_tenant_cell(
        {"a": Quota(), "b": Quota()},
        apps={"a": app, "b": app},
        PERDURE_VISIBILITY_MAX_UNSERVED_RUNS=str(BOUND),
    )


@pytest.fixture
async def store(tenants: TenantCell) -> AsyncIterator[RunStore]:
    settings = tenants.cell.settings
    databases = Databases.connect(settings)
    yield databases.runs(settings, tenants.cell.cell)
    await databases.close()


def _entry(namespace: str, i: int) -> RunEntry:
    status = STATUSES[i % 3]
    started = START + timedelta(minutes=i // 2)  # pairs start together: ties are ordered by run id
    state = RunState(
        namespace=namespace,
        workflow_id=f"gen-{i}",
        run_id=f"{namespace}-run-{i:05d}",
        first_run_id=f"{namespace}-run-{i:05d}",
        workflow_type=("Order", "Refund")[i % 2],
        status=status,
        start_time=started,
        close_time=None if status == "running" else started + timedelta(seconds=30),
        search_attributes={"CustomerId": f"c-{i % 100}", "Amount": i % 50},
        next_event_id=2,  # as if it had its started event (a later write is then an update)
    )
    return RunEntry(state=state, partition=i % 2, persisted_next_event_id=1, state_changed=True)


async def _write_runs(store: RunStore, namespace: str, count: int) -> float:
    """Write ``count`` runs through the engine's own write path; returns the seconds it took."""
    began = time.monotonic()
    for first in range(0, count, 500):
        entries = [_entry(namespace, i) for i in range(first, min(first + 500, count))]
        await store.write(entries, {0: 0, 1: 0}, {0: (0, 0), 1: (0, 0)})
    await store.settle_copies()
    return time.monotonic() - began


def _plan_text(explained: dict[str, Any]) -> str:
    return json.dumps(explained.get("queryPlanner", explained), default=str)


async def _documents(store: RunStore, namespace: str) -> list[dict[str, Any]]:
    """Every run of the namespace as the in-memory evaluator reads it (read whole, for the expectation)."""
    return [
        run_document(
            run_id=d["_id"],
            workflow_id=d["workflow_id"],
            workflow_type=d["workflow_type"],
            status=d["status"],
            start_time=d["start_time"],
            close_time=d["close_time"],
            search_attributes=state_of(d).get("search_attributes") or {},
        )
        async for d in store.runs.find({"namespace": namespace}, {"tail": 0, "outbox": 0})
    ]


def _expected(documents: list[dict[str, Any]], query: str) -> list[str]:
    """The run ids ``query`` matches, by the in-memory evaluator."""
    return [d["_id"] for d in select(documents, parse_query(query, ATTRIBUTES))]


async def _register(tenants: TenantCell, store: RunStore) -> None:
    """CustomerId and Amount in both namespaces: the first through the CLI, the others directly."""
    a, b = tenants.a.record.name, tenants.b.record.name
    code, out, err = await run_perdure(
        tenants, "namespace", "search-attribute", "add", a, "CustomerId", "Keyword"
    )
    assert (code, out.strip()) == (0, f"CustomerId (Keyword) registered in {a}"), err
    code, _, err = await run_perdure(tenants, "namespace", "search-attribute", "add", a, "CustomerId", "Int")
    assert code == 1 and "'CustomerId' is registered already, as Keyword, not Int" in err, err
    settings = tenants.cell.settings
    databases = Databases.connect(settings)
    try:
        for namespace in (a, b):
            for name, kind in ATTRIBUTES.items():
                await register_search_attribute(databases.control, store, namespace, name, kind)
        assert await databases.control.search_attributes_of(a) == ATTRIBUTES
    finally:
        await databases.close()


async def test_queries_over_search_attributes_on_2000_runs(tenants: TenantCell, store: RunStore) -> None:
    a, b = tenants.a.record.name, tenants.b.record.name
    began = time.monotonic()
    await _register(tenants, store)
    seconds = await _write_runs(store, a, RUNS)
    await _write_runs(store, b, 40)
    print(f"registered 2 attributes in 2 namespaces, wrote {RUNS} run documents in {seconds:.2f} s")

    async with await Client.connect(tenants.connection_string("a")) as client:
        # Real workflows upsert the attribute and are found by it.
        handles = [await client.start_workflow(Order.run, "c-42", 7, id=f"real-{i}") for i in range(3)]
        for handle in handles:
            assert await handle.result(timeout=60) == "c-42:7"
        real = await client.list_workflows(
            query="CustomerId = 'c-42' AND Amount = 7 AND WorkflowType = 'Order'"
        )
        assert sorted(r["workflow_id"] for r in real) == ["real-0", "real-1", "real-2"]
        assert real[0]["search_attributes"] == {"CustomerId": "c-42", "Amount": 7}
        documents = await _documents(store, a)
        assert len(documents) == RUNS + 3

        # The example: answers and count as the evaluator computes them over every run.
        example = (
            "WorkflowType = 'Order' AND ExecutionStatus = 'Running' AND CustomerId = 'c-42' "
            "AND StartTime > '2026-12-01T02:00:00Z' ORDER BY StartTime DESC"
        )
        expected = _expected(documents, example)
        assert 0 < len(expected) < 20
        assert [r["run_id"] for r in await client.list_workflows(query=example)] == expected
        assert await client.count_workflows(example) == len(expected)

        # IN and OR, each branch read from an index; a run matching two branches counts once.
        either = "CustomerId IN ('c-42', 'c-7') OR (WorkflowType = 'Refund' AND Amount < 3)"
        expected = _expected(documents, either)
        assert [r["run_id"] for r in await client.list_workflows(query=either, limit=500)] == expected
        assert await client.count_workflows(either) == len(expected)

        # More than a page (1,000 runs a request): the client follows the page token, in order.
        orders = "WorkflowType = 'Order'"
        expected = _expected(documents, orders)
        assert len(expected) == RUNS // 2 + 3
        listed = await client.list_workflows(query=orders, limit=1_500)
        assert [r["run_id"] for r in listed] == expected[:1_500]
        by_amount = "CustomerId = 'c-42' ORDER BY Amount DESC, StartTime ASC"
        listed = await client.list_workflows(query=by_amount)
        assert [r["run_id"] for r in listed] == _expected(documents, by_amount)

        # A bad query points at its token; an unregistered attribute is refused by name.
        with pytest.raises(MalformedRequestError, match="column 25: unexpected 'AND'") as bad:
            await client.list_workflows(query="CustomerId = 'c-42' AND AND")
        assert "\n  CustomerId = 'c-42' AND AND\n                          ^" in str(bad.value)
        with pytest.raises(MalformedRequestError, match="unknown field 'Region'"):
            await client.count_workflows("Region = 'eu'")
        # No index serves a range alone, and the namespace is over the bound: refused, saying what to add.
        for ask in (client.list_workflows(query="Amount > 45"), client.count_workflows("Amount > 45")):
            with pytest.raises(MalformedRequestError, match="query refused: no index serves") as refused:
                await ask
            assert f"holds more than {BOUND} runs" in str(refused.value)
            assert "add an equality (= or IN) on one of Amount, CustomerId, WorkflowType" in str(
                refused.value
            )
        # The same range with an indexed equality is answered.
        narrowed = "Amount > 45 AND CustomerId = 'c-47'"
        assert await client.count_workflows(narrowed) == len(_expected(documents, narrowed)) == 20

    # The attribute's index answers: the plan reads it, and reads no table or collection whole.
    parsed = parse_query("CustomerId = 'c-42' AND StartTime > '2026-12-01T02:00:00Z'", ATTRIBUTES)
    (plan,) = await explain_runs(store, a, parsed)
    text = _plan_text(plan)
    assert any(marker in text for marker in INDEX_MARKERS), text
    assert not any(marker in text for marker in SCAN_MARKERS), text
    assert "sa_CustomerId" in text and "search_attribute_s" in text, text  # the index of CustomerId
    # The batch operations' walk: newest first, keyset pages that add up to the whole answer.
    two = parse_query("CustomerId IN ('c-1', 'c-2')", ATTRIBUTES)
    walked: list[str] = []
    after = None
    while page := await matching_runs(store, a, two, after=after, limit=7):
        walked += [d["_id"] for d in page]
        after = (page[-1]["start_time"], page[-1]["_id"])
    assert walked == _expected(documents, "CustomerId IN ('c-1', 'c-2')")

    # Tenant b asks for what a holds by every field that names it: it sees its own runs only.
    own = await _documents(store, b)
    async with await Client.connect(tenants.connection_string("b")) as other:
        seen = await other.list_workflows(query="CustomerId = 'c-42' OR WorkflowId = 'real-0' OR RunId = 'x'")
        assert [r["run_id"] for r in seen] == _expected(own, "CustomerId = 'c-42'") == []  # b has c-0..c-39
        assert await other.list_workflows(query=f"RunId = '{a}-run-00042'") == []
        mine = await other.list_workflows(query="WorkflowId IN ('real-0', 'gen-7', 'gen-1042')")
        assert [r["run_id"] for r in mine] == [f"{b}-run-00007"]
        assert await other.count_workflows("") == 40
        assert await other.count_workflows("Amount >= 0") == 40  # unserved, but b is under the bound

    # The CLI: a list by query, and a bad query's caret on stderr with a non-zero exit.
    code, out, err = await run_perdure(
        tenants, "workflow", "list", a, "--query", "CustomerId = 'c-42' AND Amount = 7"
    )
    assert code == 0, err
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == ["real-0", "real-1", "real-2"]
    code, out, err = await run_perdure(tenants, "workflow", "count", a, "--query", "Amount >> 3")
    assert code == 1 and "column 9: unexpected '>'" in err and "\n  Amount >> 3\n          ^" in err, err
    print(f"the test took {time.monotonic() - began:.1f} s")


async def test_the_database_and_the_evaluator_agree_on_every_operator(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    """Each operator on each type, answered by the database (through the run documents' write path, then
    a rewrite that changes the attributes) and by the in-memory evaluator: the same runs, in order."""
    store = RunStore(mongo_db)
    await store.ensure_indexes()
    types: dict[str, AttributeType] = {
        **ATTRIBUTES,
        "Score": "Double",
        "Vip": "Bool",
        "DueAt": "Datetime",
        "Tags": "Keyword",
    }
    for name, kind in types.items():
        await index_search_attribute(store, name, kind)
    entries = [_entry("ns", i) for i in range(60)]
    await store.write(entries, {0: 0, 1: 0}, {0: (0, 0), 1: (0, 0)})
    for i, entry in enumerate(entries):  # a second write changes the attributes, as an upsert does
        due = START + timedelta(hours=i % 7)
        entry.state.search_attributes.update(
            {
                "Score": i / 4,
                "Vip": i % 5 == 0,
                "DueAt": due.astimezone(timezone(timedelta(hours=2))).isoformat() if i % 6 else "n/a",
                "Tags": [f"t{i % 3}", f"u{i % 4}"],
            }
        )
        entry.state.next_event_id += 1
        entry.state_changed = True
    await store.write(entries, {0: 0, 1: 0}, {0: (0, 0), 1: (0, 0)})
    documents = await _documents(store, "ns")
    queries = [
        "CustomerId = 'c-7'",
        "CustomerId != 'c-7' AND Amount < 5",
        "Amount IN (1, 2, 3) OR Vip = true",
        "Amount NOT IN (1, 2) AND Score > 10",
        "Score BETWEEN 2.5 AND 4",
        "CustomerId STARTS_WITH 'c-1'",
        "Tags = 't1' AND Tags != 'u0'",
        "Tags STARTS_WITH 'u3'",
        "DueAt >= '2026-12-01T03:00:00Z' AND DueAt < '2026-12-01T05:00:00+00:00'",
        "DueAt BETWEEN '2026-12-01T00:00:00Z' AND '2026-12-01T01:00:00Z' ORDER BY DueAt DESC",
        "CloseTime > '2026-12-01T00:10:00Z' OR ExecutionStatus = 'Running'",
        "WorkflowId IN ('gen-3', 'gen-4') OR RunId = 'ns-run-00009'",
        "Vip = false ORDER BY Score DESC, StartTime ASC",
        "ORDER BY Amount ASC",
    ]
    for text in queries:
        query = parse_query(text, types)
        expected = [d["_id"] for d in select(documents, query)]
        page = await search_runs(store, "ns", query, limit=100)
        assert [d["_id"] for d in page.runs] == expected, text
        assert await count_runs(store, "ns", query) == len(expected), text
    # Not a time any more: the run's earlier time is gone with it.
    stale = parse_query("DueAt < '2030-01-01T00:00:00Z'", types)
    assert len((await search_runs(store, "ns", stale)).runs) == 50
