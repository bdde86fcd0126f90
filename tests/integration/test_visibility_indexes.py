"""Visibility and point reads are answered from indexes, not by scanning the cell's runs (issue 4.6)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from perdure.platform.stores.run_store import RunStore

# How each server names a plan that reads an index, and one that reads the whole collection.
INDEX_MARKERS = ("IXSCAN", "Index Scan", "Index Only Scan")
SCAN_MARKERS = ("COLLSCAN", "Seq Scan")


def _plan_text(explained: dict[str, Any]) -> str:
    return json.dumps(explained.get("queryPlanner", explained), default=str)


def _assert_index_served(explained: dict[str, Any]) -> None:
    plan = _plan_text(explained)
    assert any(marker in plan for marker in INDEX_MARKERS), plan
    assert not any(marker in plan for marker in SCAN_MARKERS), plan


async def test_visibility_queries_and_point_reads_use_indexes(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = RunStore(mongo_db)
    await store.ensure_indexes()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await store.runs.insert_many(
        [
            {
                "_id": f"run-{i}",
                "namespace": f"ns-{i % 20}",
                "workflow_id": f"wf-{i}",
                "workflow_type": ["Order", "Refund", "Audit"][i % 3],
                "status": ["running", "completed", "failed", "blocked"][i % 4],
                "start_time": start + timedelta(seconds=i),
                "partition": i % 8,
                "has_timers": i % 5 == 0,
            }
            for i in range(2_000)
        ]
    )

    by_status = await store.list_cursor("ns-3", status="running").explain()
    _assert_index_served(by_status)
    by_type = await store.list_cursor("ns-3", workflow_type="Refund").explain()
    _assert_index_served(by_type)
    point = await store.runs.find({"_id": "run-77"}).explain()
    _assert_index_served(point)
    timers = await store.runs.find({"partition": 3, "has_timers": True}).explain()
    _assert_index_served(timers)

    # The indexed answers are the right ones.
    blocked = await store.list_runs("ns-3", status="blocked", limit=1_000)
    expected = {f"run-{i}" for i in range(2_000) if i % 20 == 3 and i % 4 == 3}
    assert len(expected) == 100
    assert {d["_id"] for d in blocked} == expected
    assert [d["start_time"] for d in blocked] == sorted((d["start_time"] for d in blocked), reverse=True)
    assert await store.list_runs("ns-3", status="running") == []  # ns-3 holds no running run
