"""How many workflows a namespace runs, for its concurrency quota where starts are admitted.

A count is a scan of the namespace's runs, so it is taken again only once the last one is old enough:
after ``min_seconds``, or ``cost_factor`` times as long as the last count took, whichever is longer.
The busier the database (the slower a count), the longer one count serves, so counting never becomes
its main work.

A start is admitted against the count by ``reserve``, which checks and takes a place in one step per
namespace (starts that arrive together cannot all see the same room). What a count cannot see is added
to it: the starts reserved here that still wait in admission's queue, and those sent in the
``SENT_GRACE_SECONDS`` before the count began (the engine may not have written them yet). Starts
admitted by other processes meanwhile can take a namespace a little past its limit; this process's own
never do."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

RECOUNT_MIN_SECONDS = 1.0
RECOUNT_COST_FACTOR = 10.0
SENT_GRACE_SECONDS = 5.0


@dataclass
class _Count:
    running: int
    began: float  # when the count was taken (what was written before it is in it)
    recount_at: float


class RunningCounts:
    def __init__(
        self,
        count: Callable[[str], Awaitable[int]],
        *,
        clock: Callable[[], float] = time.monotonic,
        min_seconds: float = RECOUNT_MIN_SECONDS,
        cost_factor: float = RECOUNT_COST_FACTOR,
        sent_grace: float = SENT_GRACE_SECONDS,
    ) -> None:
        self._count = count
        self._clock = clock
        self._min_seconds = min_seconds
        self._cost_factor = cost_factor
        self._sent_grace = sent_grace
        self._counted: dict[str, _Count] = {}
        self._queued: collections.Counter[str] = collections.Counter()
        self._sent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    async def running(self, namespace: str) -> int:
        """The namespace's running workflows now, as far as this process knows."""
        counted = self._counted.get(namespace)
        now = self._clock()
        if counted is None or now >= counted.recount_at:
            running = await self._count(namespace)
            took = self._clock() - now
            counted = _Count(running, now, now + max(self._min_seconds, self._cost_factor * took))
            self._counted[namespace] = counted
        sent = self._sent[namespace]
        while sent and sent[0] < counted.began - self._sent_grace:
            sent.popleft()  # long written: the count holds it
        unseen = sum(1 for at in sent if at >= counted.began - self._sent_grace)
        return counted.running + self._queued[namespace] + unseen

    async def reserve(self, namespace: str, limit: int) -> int | None:
        """Take a place for a start if the namespace runs fewer than ``limit``: None when taken (then
        ``sent`` or ``released`` it), else the running count that refused it."""
        async with self._locks[namespace]:
            running = await self.running(namespace)
            if running >= limit:
                return running
            self._queued[namespace] += 1
            return None

    def sent(self, namespace: str) -> None:
        """A reserved start went to the cell: counted as running until a count sees it."""
        self._release(namespace)
        self._sent[namespace].append(self._clock())

    def released(self, namespace: str) -> None:
        """A reserved start was not sent after all (handed back to its queue, to come again)."""
        self._release(namespace)

    def _release(self, namespace: str) -> None:
        if self._queued[namespace] > 0:
            self._queued[namespace] -= 1
