"""How many workflows a namespace runs, for its concurrency quota where starts are admitted.

A count is a scan of the namespace's runs, so it is taken again only once the last one is old enough:
after ``min_seconds``, or ``cost_factor`` times as long as the last count took, whichever is longer.
The busier the database (the slower a count), the longer one count serves, so counting never becomes
its main work. Between counts the starts admitted here are added; starts admitted by other processes
meanwhile can take a namespace a little past its limit, this process's own never do."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

RECOUNT_MIN_SECONDS = 1.0
RECOUNT_COST_FACTOR = 10.0


class RunningCounts:
    def __init__(
        self,
        count: Callable[[str], Awaitable[int]],
        *,
        clock: Callable[[], float] = time.monotonic,
        min_seconds: float = RECOUNT_MIN_SECONDS,
        cost_factor: float = RECOUNT_COST_FACTOR,
    ) -> None:
        self._count = count
        self._clock = clock
        self._min_seconds = min_seconds
        self._cost_factor = cost_factor
        self._counted: dict[str, tuple[int, float]] = {}  # namespace: (running, when to count again)

    async def running(self, namespace: str) -> int:
        """The namespace's running workflows now, as far as this process knows."""
        counted = self._counted.get(namespace)
        now = self._clock()
        if counted is None or now >= counted[1]:
            running = await self._count(namespace)
            took = self._clock() - now
            counted = (running, now + max(self._min_seconds, self._cost_factor * took))
            self._counted[namespace] = counted
        return counted[0]

    def started(self, namespace: str) -> None:
        """A start admitted: counted until the next count sees it."""
        counted = self._counted.get(namespace)
        if counted is not None:
            self._counted[namespace] = (counted[0] + 1, counted[1])
