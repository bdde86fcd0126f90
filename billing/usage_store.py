"""Metered usage in the metering database: hourly aggregates per (namespace, hour, metric), counted
exactly once without multi-document transactions.

Two guards, each a single-document condition:
- **ids** (``usage_ids``): the first (partition, offset) a record id was seen at. A record whose id was
  first seen elsewhere is a duplicate (an outbox re-sent, a sample taken twice, a copy published again)
  and is skipped; the same record read again (a redelivery) is not a duplicate.
- **offsets** (``usage_hours``): an aggregate document is kept per topic partition as well, and holds
  the last offset applied to it; only records past that offset are added, and the update is conditioned
  on the offset it read. A batch applied in part before a crash is applied again without counting
  twice. Each topic partition has one consumer, so the condition fails only for a zombie consumer.

Reading an aggregate sums its partitions' documents.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from perdure.infra.document_writes import each, insert_ignoring_duplicates
from perdure.platform.core.usage import UsageRecord, hour_of

Document = dict[str, Any]
# How long record ids are remembered: copies of a record arrive within minutes (a re-sent outbox, a
# redelivery); a month and a margin covers a period being exported while late copies still come in.
DEDUP_WINDOW = timedelta(days=40)


class FencedUsageWrite(RuntimeError):
    """An aggregate changed under this consumer: another consumer owns the partition now."""


@dataclass(frozen=True)
class AppliedBatch:
    applied: int  # records counted
    duplicates: int  # records skipped as copies of a record counted before


@dataclass(frozen=True)
class HourlyUsage:
    namespace: str
    hour: datetime
    metric: str
    quantity: int


def _aggregate_id(namespace: str, hour: datetime, metric: str, partition: int) -> str:
    return f"{namespace}|{hour.isoformat()}|{metric}|{partition}"


class UsageStore:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self.ids = database["usage_ids"]
        self.hours = database["usage_hours"]

    async def ensure_indexes(self) -> None:
        await self.hours.create_index([("namespace", ASCENDING), ("hour", ASCENDING)])
        await self.ids.create_index([("hour", ASCENDING)])

    async def apply(self, partition: int, records: Sequence[tuple[int, UsageRecord]]) -> AppliedBatch:
        """Count ``records`` (offset, record) of one topic partition, in offset order."""
        if not records:
            return AppliedBatch(0, 0)
        counted = await self._not_seen_elsewhere(partition, records)
        contributions: dict[str, list[tuple[int, UsageRecord]]] = collections.defaultdict(list)
        for offset, record in counted:
            key = _aggregate_id(record.namespace, record.hour, record.metric, partition)
            contributions[key].append((offset, record))
        found = {
            d["_id"]: d["offset"]
            async for d in self.hours.find({"_id": {"$in": list(contributions)}}, {"offset": 1})
        }
        writes = []
        for key, items in contributions.items():
            applied_up_to = found.get(key, -1)
            fresh = [(offset, record) for offset, record in items if offset > applied_up_to]
            if not fresh:
                continue  # applied before a crash, read again
            quantity = sum(record.quantity for _, record in fresh)
            last = fresh[-1][0]
            first = fresh[0][1]
            if key not in found:
                document = {
                    "_id": key,
                    "namespace": first.namespace,
                    "hour": first.hour,
                    "metric": first.metric,
                    "partition": partition,
                    "quantity": quantity,
                    "offset": last,
                }
                writes.append(partial(self._create, document))
            else:
                writes.append(partial(self._add, key, applied_up_to, quantity, last))
        await each(writes)
        return AppliedBatch(len(counted), len(records) - len(counted))

    async def _not_seen_elsewhere(
        self, partition: int, records: Sequence[tuple[int, UsageRecord]]
    ) -> list[tuple[int, UsageRecord]]:
        sightings = [
            {"_id": record.id, "partition": partition, "offset": offset, "hour": record.hour}
            for offset, record in records
        ]
        refused = await insert_ignoring_duplicates(self.ids, sightings)
        if not refused:
            return list(records)
        first_seen = {
            d["_id"]: (d["partition"], d["offset"])
            async for d in self.ids.find({"_id": {"$in": list({d["_id"] for d in refused})}})
        }
        return [
            (offset, record)
            for offset, record in records
            if first_seen.get(record.id, (partition, offset)) == (partition, offset)
        ]

    async def _create(self, document: Document) -> None:
        try:
            await self.hours.insert_one(document)
        except DuplicateKeyError:
            raise FencedUsageWrite(f"aggregate {document['_id']} was created by another consumer") from None

    async def _add(self, key: str, applied_up_to: int, quantity: int, last: int) -> None:
        result = await self.hours.update_one(
            {"_id": key, "offset": applied_up_to}, {"$inc": {"quantity": quantity}, "$set": {"offset": last}}
        )
        if result.matched_count != 1:
            raise FencedUsageWrite(f"aggregate {key} changed under this consumer")

    async def forget_ids_before(self, hour: datetime) -> None:
        await self.ids.delete_many({"hour": {"$lt": hour}})

    async def hourly(self, namespaces: Sequence[str], start: datetime, end: datetime) -> list[HourlyUsage]:
        """Usage of ``namespaces`` in the hours from ``start`` (inclusive) to ``end`` (exclusive), summed
        over the topic's partitions, in (namespace, hour, metric) order."""
        totals: collections.Counter[tuple[str, datetime, str]] = collections.Counter()
        for namespace in namespaces:
            query = {"namespace": namespace, "hour": {"$gte": hour_of(start), "$lt": end}}
            async for d in self.hours.find(query, {"hour": 1, "metric": 1, "quantity": 1}):
                totals[namespace, d["hour"], d["metric"]] += d["quantity"]
        return [
            HourlyUsage(ns, hour, metric, quantity) for (ns, hour, metric), quantity in sorted(totals.items())
        ]
