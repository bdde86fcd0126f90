"""Counting a namespace's running workflows for its concurrency quota: counted again after a second,
or after ten times as long as a slow count took; starts admitted in between are added."""

from __future__ import annotations

from perdure.platform.quotas.running_counts import RunningCounts


class _Database:
    """Counts that take ``seconds`` of the test's clock each."""

    def __init__(self, clock: list[float], seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.running = 0
        self.counts = 0

    async def count(self, namespace: str) -> int:
        self.counts += 1
        self.clock[0] += self.seconds
        return self.running


async def test_a_fast_count_is_taken_again_after_a_second_and_admitted_starts_are_added() -> None:
    clock = [0.0]
    database = _Database(clock, seconds=0.01)
    counts = RunningCounts(database.count, clock=lambda: clock[0])
    database.running = 3
    assert await counts.running("ns") == 3
    counts.started("ns")
    counts.started("ns")
    database.running = 100  # not seen until the next count
    clock[0] += 0.5
    assert await counts.running("ns") == 5
    assert database.counts == 1
    clock[0] += 0.6
    assert await counts.running("ns") == 100
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


async def test_namespaces_are_counted_apart() -> None:
    clock = [0.0]
    database = _Database(clock, seconds=0.0)
    counts = RunningCounts(database.count, clock=lambda: clock[0])
    database.running = 7
    assert await counts.running("a") == 7
    counts.started("a")
    database.running = 2
    assert await counts.running("b") == 2
    assert await counts.running("a") == 8
    counts.started("never-counted")  # nothing to add to until it is counted
    assert await counts.running("never-counted") == 2
