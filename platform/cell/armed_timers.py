"""The durable timers of the partitions this process owns, held in memory for firing.

The timers collection is their durable copy; it is read once when a partition is taken, and only the
owner of a partition arms or cancels its timers, so memory and collection agree while it owns it.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(order=True)
class _Entry:
    fire_at: datetime
    order: int
    key: str = field(compare=False)
    partition: int = field(compare=False)


class ArmedTimers:
    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._documents: dict[str, dict[str, Any]] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._documents)

    def arm(self, document: dict[str, Any]) -> None:
        """Add or move a timer: a timers-collection document (``_id``, ``partition``, ``fire_at``, ...)."""
        self._documents[document["_id"]] = document
        heapq.heappush(
            self._heap, _Entry(document["fire_at"], next(self._order), document["_id"], document["partition"])
        )

    def cancel(self, key: str) -> None:
        self._documents.pop(key, None)

    def drop_namespaces(self, namespaces: frozenset[str]) -> None:
        for key in [k for k, d in self._documents.items() if d["namespace"] in namespaces]:
            del self._documents[key]

    def drop_partitions(self, partitions: set[int]) -> None:
        for key in [k for k, d in self._documents.items() if d["partition"] in partitions]:
            del self._documents[key]

    def _live(self, entry: _Entry) -> bool:
        document = self._documents.get(entry.key)
        return document is not None and document["fire_at"] == entry.fire_at

    def pop_due(self, now: datetime, limit: int = 1000) -> list[dict[str, Any]]:
        due: list[dict[str, Any]] = []
        while self._heap and len(due) < limit and self._heap[0].fire_at <= now:
            entry = heapq.heappop(self._heap)
            if self._live(entry):
                due.append(self._documents.pop(entry.key))
        return due

    def next_fire_at(self) -> datetime | None:
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0].fire_at if self._heap else None
