"""Storage metering: at every multiple of ``storage_sample_seconds`` (aligned to the clock), the owner of
each partition sums the history bytes of its runs per namespace: open runs are *active* storage, closed
runs within the namespace's retention are *retained* storage. A sample stands for the interval before
it, and its id names (namespace, cell, partition, metric, interval): a partition sampled twice (its
owner changed, a process restarted) is counted once by metering."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from perdure.platform.core.run_state import OPEN_STATUSES
from perdure.platform.core.usage import StorageMetric, UsageRecord, storage_usage
from perdure.platform.messaging.usage_producer import UsageProducer
from perdure.platform.stores.namespace_apps import NamespaceApps
from perdure.platform.stores.run_store import RunStore

log = logging.getLogger("perdure.storage")


def last_boundary(now: datetime, every: timedelta) -> datetime:
    span = int(every.total_seconds())
    return datetime.fromtimestamp(int(now.timestamp()) // span * span, UTC)


class StorageSampler:
    def __init__(
        self,
        cell: str,
        store: RunStore,
        apps: NamespaceApps,
        usage: UsageProducer,
        owned: Callable[[], Iterable[int]],
        every: timedelta,
    ) -> None:
        self.cell = cell
        self.store = store
        self.apps = apps
        self.usage = usage
        self.owned = owned
        self.every = every

    async def run(self, stopping: asyncio.Event) -> None:
        # The interval that just ended is sampled at start too (a restart may have missed it).
        while not stopping.is_set():
            boundary = last_boundary(datetime.now(UTC), self.every)
            try:
                await self.sample(boundary, sorted(self.owned()))
            except Exception:
                log.exception("sampling storage failed; the next interval is sampled as usual")
            wait = (boundary + self.every - datetime.now(UTC)).total_seconds()
            try:
                await asyncio.wait_for(stopping.wait(), max(wait, 0.0))
            except TimeoutError:
                pass

    async def sample(self, boundary: datetime, partitions: list[int]) -> list[UsageRecord]:
        """Sample the interval ending at ``boundary`` for ``partitions``; returns what was sent."""
        retention = {record.name: timedelta(days=record.retention_days) for record in await self.apps.all()}
        interval_start = boundary - self.every
        records: list[UsageRecord] = []
        for partition in partitions:
            totals: collections.Counter[tuple[str, StorageMetric]] = collections.Counter()
            async for run in self.store.storage_of(partition):
                namespace = run["namespace"]
                if namespace not in retention:
                    # Not served here (moved away, its copies not yet removed; or moving in, not yet
                    # handed over): the cell that serves it counts its storage, once.
                    continue
                if run["status"] in OPEN_STATUSES:
                    totals[namespace, "active_storage"] += run.get("history_bytes", 0)
                    continue
                kept = retention.get(namespace)
                closed = run.get("close_time")
                if kept is not None and closed is not None and _aware(closed) + kept >= boundary:
                    totals[namespace, "retained_storage"] += run.get("history_bytes", 0)
            records.extend(
                storage_usage(namespace, metric, self.cell, partition, interval_start, size, self.every)
                for (namespace, metric), size in sorted(totals.items())
                if size > 0
            )
        await self.usage.send_all(records)
        return records


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
