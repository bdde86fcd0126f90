"""Billed actions reconciled with the histories: what metering aggregated for a namespace, and the same
actions counted from its runs' histories independently of the platform's own mapping. Used by the
metering tests and by the chaos run."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from perdure.billing.metering_service import usage_store
from perdure.infra.settings import Settings
from perdure.platform.core import history as h
from perdure.platform.stores.run_store import RunStore

# Billable actions in history events, written out here independently of the platform's own mapping.
BILLED_EVENTS = {
    "workflow_execution_started": "workflow_started",
    "workflow_execution_signaled": "signal",
    "workflow_execution_update_accepted": "update",
    "activity_task_started": "activity_started",
    "timer_started": "timer_started",
    "upsert_workflow_search_attributes": "search_attribute_update",
    "workflow_execution_reset": "reset",
}


def mongo_client(settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(settings.mongodb_uri, tz_aware=True)


async def metered(settings: Settings, namespace: str) -> collections.Counter[str]:
    client = mongo_client(settings)
    try:
        now = datetime.now(UTC)
        rows = await usage_store(client, settings).hourly(
            [namespace], now - timedelta(days=1), now + timedelta(hours=1)
        )
    finally:
        await client.close()
    totals: collections.Counter[str] = collections.Counter()
    for row in rows:
        totals[row.metric] += row.quantity
    return totals


async def counted_from_histories(settings: Settings, cell: str, namespace: str) -> collections.Counter[str]:
    client = mongo_client(settings)
    counts: collections.Counter[str] = collections.Counter()
    try:
        store = RunStore(client[settings.cell_database(cell)])
        async for document in store.runs.find({"namespace": namespace}):
            events = await store.read_history(document["_id"], document)
            # A run a reset made copied its history up to its reset event from the run it was reset
            # from, and carries signals over from it: those were counted there.
            copied = next((e.event_id for e in events if isinstance(e, h.WorkflowExecutionReset)), 1)
            for event in events[copied - 1 :]:
                if isinstance(event, h.WorkflowExecutionSignaled) and event.reapplied_from_run_id:
                    continue
                if isinstance(event, h.MarkerRecorded):
                    counts["side_effect"] += event.marker == "side_effect"
                elif event.type in BILLED_EVENTS:
                    counts[BILLED_EVENTS[event.type]] += 1
    finally:
        await client.close()
    return counts
