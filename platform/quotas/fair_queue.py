"""Weighted deficit round robin over per-namespace queues, with each namespace's token bucket.

One namespace's backlog cannot delay another's work beyond its share: each round gives every
namespace with waiting work ``quantum * weight`` of credit, and work leaves a namespace's queue only
against its credit and its tokens. With ``fair=False`` it is a plain FIFO across namespaces (for the
comparison the fairness benchmark makes).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from perdure.platform.quotas.token_bucket import TokenBucket

T = TypeVar("T")


@dataclass
class _Lane(Generic[T]):
    bucket: TokenBucket
    weight: int
    waiting: collections.deque[tuple[int, T]] = field(default_factory=collections.deque)
    deficit: float = 0.0


class FairQueue(Generic[T]):
    # Turns of one item per unit of weight: the finest interleaving, so a namespace that just arrived
    # waits behind at most one turn of each other namespace.
    def __init__(self, *, quantum: int = 1, fair: bool = True) -> None:
        self.quantum = quantum
        self.fair = fair
        self._lanes: dict[str, _Lane[T]] = {}
        self._active: collections.deque[str] = collections.deque()  # lanes with waiting work, in turn
        self._arrival = itertools.count()

    def configure(self, namespace: str, *, rate: float, burst: int, weight: int) -> None:
        lane = self._lanes.get(namespace)
        if lane is None:
            self._lanes[namespace] = _Lane(TokenBucket(rate, burst), weight)
        else:
            lane.bucket.reconfigure(rate, burst)
            lane.weight = weight

    def put(self, namespace: str, item: T) -> None:
        lane = self._lanes[namespace]
        if not lane.waiting and namespace not in self._active:
            self._active.append(namespace)
        lane.waiting.append((next(self._arrival), item))

    def throttled(self, namespace: str, now: float) -> bool:
        """Whether an item put now for ``namespace`` waits for tokens: its burst is spent and what waits
        before it takes the tokens there are. Such a request is throttled (and metered as one); one that
        waits only for its turn among namespaces, or for the engine, is not."""
        lane = self._lanes[namespace]
        return lane.bucket.seconds_until(now, len(lane.waiting) + 1) > 0

    def waiting(self, namespace: str | None = None) -> int:
        lanes: Iterable[_Lane[T]] = self._lanes.values() if namespace is None else [self._lanes[namespace]]
        return sum(len(lane.waiting) for lane in lanes)

    def take(self, now: float, limit: int, room: Mapping[str, int] | None = None) -> list[tuple[str, T]]:
        """Up to ``limit`` items that may enter now, in the order they are due; ``room`` caps what a
        namespace may take this time (its concurrency left), unlimited for a namespace not in it."""
        left = dict(room) if room is not None else {}
        if self.fair:
            return self._take_fair(now, limit, left)
        return self._take_fifo(now, limit, left)

    def _take_fifo(self, now: float, limit: int, left: dict[str, int]) -> list[tuple[str, T]]:
        taken: list[tuple[str, T]] = []
        while len(taken) < limit:
            heads = [
                (lane.waiting[0][0], name)
                for name, lane in self._lanes.items()
                if lane.waiting and left.get(name, 1) > 0
            ]
            if not heads:
                break
            _, name = min(heads)
            lane = self._lanes[name]
            if not lane.bucket.try_take(now):
                break  # the oldest item waits for its tokens, and everything behind it with it
            taken.append((name, lane.waiting.popleft()[1]))
            if name in left:
                left[name] -= 1
        self._active = collections.deque(n for n in self._active if self._lanes[n].waiting)
        return taken

    def _take_fair(self, now: float, limit: int, left: dict[str, int]) -> list[tuple[str, T]]:
        taken: list[tuple[str, T]] = []
        # Lanes that can take no more this time: out of tokens, or out of room.
        blocked = {name for name in self._active if left.get(name, 1) <= 0}
        while len(taken) < limit and len(blocked) < len(self._active):
            name = self._active[0]
            lane = self._lanes[name]
            if name in blocked:
                self._active.rotate(-1)
                continue
            if lane.deficit < 1:
                lane.deficit += self.quantum * lane.weight
            while lane.waiting and lane.deficit >= 1 and len(taken) < limit:
                if left.get(name, 1) <= 0:
                    blocked.add(name)
                    break
                if not lane.bucket.try_take(now):
                    blocked.add(name)
                    break
                taken.append((name, lane.waiting.popleft()[1]))
                lane.deficit -= 1
                if name in left:
                    left[name] -= 1
            if not lane.waiting:
                lane.deficit = 0.0  # credit is not saved up while idle
                self._active.popleft()
                blocked.discard(name)
            elif lane.deficit < 1 or name in blocked:
                self._active.rotate(-1)  # its turn is over; a turn cut short by ``limit`` goes on next time
        return taken

    def drain(self) -> list[tuple[str, T]]:
        """Everything waiting, regardless of turns and tokens (to hand it back when stopping)."""
        drained = [(name, item) for name, lane in self._lanes.items() for _, item in lane.waiting]
        for lane in self._lanes.values():
            lane.waiting.clear()
            lane.deficit = 0.0
        self._active.clear()
        return drained

    def next_ready_in(self, now: float, room: Mapping[str, int] | None = None) -> float | None:
        """Seconds until some waiting item could get its tokens (None if nothing waits, or nothing that
        has room: those wait for room, not for time)."""
        room = room or {}
        waits = [
            lane.bucket.seconds_until(now)
            for name, lane in self._lanes.items()
            if lane.waiting and room.get(name, 1) > 0
        ]
        return min(waits) if waits else None
