"""Counting a namespace's running workflows for its concurrency quota: counted again after a second,
or after ten times as long as a slow count took; starts reserved and sent in between are added, and
starts that arrive together cannot all take the same place."""

from __future__ import annotations

import asyncio

from perdure.platform.quotas.running_counts import RunningCounts


class _Database:
    """Counts that take ``seconds`` of the test's clock each (and, with ``pause``, yield meanwhile)."""

    def __init__(self, clock: list[float], seconds: float, pause: bool = False) -> None:
        self.clock = clock
        self.seconds = seconds
        self.pause = pause
        self.running = 0
        self.counts = 0

    async def count(self, namespace: str) -> int:
        self.counts += 1
        if self.pause:
            await asyncio.sleep(0)  # as a real count does: other starts run meanwhile
        self.clock[0] += self.seconds
        return self.running


async def test_a_fast_count_is_taken_again_after_a_second_and_reserved_starts_are_added() -> None:
    clock = [0.0]
    database = _Database(clock, seconds=0.01)
    counts = RunningCounts(database.count, clock=lambda: clock[0], sent_grace=0.0)
    database.running = 3
    assert await counts.running("ns") == 3
    assert await counts.reserve("ns", limit=10) is None
    assert await counts.reserve("ns", limit=10) is None
    database.running = 100  # not seen until the next count
    clock[0] += 0.5
    assert await counts.running("ns") == 5
    assert database.counts == 1
    clock[0] += 0.6
    assert await counts.running("ns") == 102  # the two still queued are not in the store yet
    counts.sent("ns")
    counts.released("ns")
    assert await counts.running("ns") == 101  # one sent just now; the released one is gone
    assert database.counts == 2


async def test_a_slow_count_is_used_ten_times_as_long_as_it_took() -> None:
    clock = [0.0]
    database = _Database(clock, seconds=3.0)  # a busy database
    counts = RunningCounts(database.count, clock=lambda: clock[0])
    await counts.running("ns")
    clock[0] += 20.0  # 23 s after the count began: not yet 30
    await counts.running("ns")
    assert database.counts == 1
    clock[0] += 8.0
    await counts.running("ns")
    assert database.counts == 2


async def test_starts_arriving_together_are_held_to_the_limit() -> None:
    clock = [0.0]
    database = _Database(clock, seconds=0.0, pause=True)
    counts = RunningCounts(database.count, clock=lambda: clock[0])
    answers = await asyncio.gather(*(counts.reserve("ns", limit=2) for _ in range(6)))
    assert answers.count(None) == 2
    assert sorted(a for a in answers if a is not None) == [2, 2, 2, 2]


async def test_a_start_sent_just_before_a_count_is_still_counted_until_its_grace_passes() -> None:
    clock = [0.0]
    database = _Database(clock, seconds=0.0)
    counts = RunningCounts(database.count, clock=lambda: clock[0], sent_grace=5.0)
    assert await counts.reserve("ns", limit=1) is None
    counts.sent("ns")  # on its way to the engine: the store does not have it yet
    clock[0] += 1.5  # a new count, which may not see it
    assert await counts.reserve("ns", limit=1) == 1
    database.running = 1
    clock[0] += 10.0  # long after: the store's count has it, and it is not added twice
    assert await counts.running("ns") == 1


async def test_namespaces_are_counted_apart() -> None:
    clock = [0.0]
    database = _Database(clock, seconds=0.0)
    counts = RunningCounts(database.count, clock=lambda: clock[0])
    database.running = 7
    assert await counts.running("a") == 7
    assert await counts.reserve("a", limit=100) is None
    database.running = 2
    assert await counts.running("b") == 2
    assert await counts.running("a") == 8
