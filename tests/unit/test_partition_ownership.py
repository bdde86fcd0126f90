"""The engine's side of a rebalance never fails: aiokafka swallows what a rebalance callback raises and
keeps the assignment, so a partition the engine failed to take would be read by nobody."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from pymongo.errors import AutoReconnect

from perdure.infra.outages import OUTAGES
from perdure.platform.cell.engine import CellEngine


class _Timers:
    def __init__(self) -> None:
        self.armed: list[dict[str, Any]] = []
        self.dropped: set[int] = set()

    def drop_partitions(self, partitions: set[int]) -> None:
        self.dropped |= partitions
        self.armed = [t for t in self.armed if t["partition"] not in partitions]

    def arm(self, document: dict[str, Any]) -> None:
        self.armed.append(document)


class _FlakyStore:
    """A run store whose first ``failures`` calls find the database gone."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.epochs: dict[int, int] = {}

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise AutoReconnect("connection refused")

    async def take_partition(self, partition: int) -> int:
        self._maybe_fail()
        self.epochs[partition] = self.epochs.get(partition, 0) + 1
        return self.epochs[partition]

    async def armed_timers_of(self, partition: int) -> list[dict[str, Any]]:
        self._maybe_fail()
        return [{"partition": partition, "key": f"t{partition}"}]

    async def settle_copies(self) -> None:
        self._maybe_fail()


class _Sender:
    def __init__(self) -> None:
        self.timers = _Timers()


def _engine(store: _FlakyStore) -> CellEngine:
    sender = _Sender()
    return CellEngine(
        cell=cast(Any, None),
        store=cast(Any, store),
        apps=cast(Any, None),
        tasks=cast(Any, None),
        sender=cast(Any, sender),
        consumer=cast(Any, None),
    )


@pytest.fixture(autouse=True)
def _no_outage_left() -> Any:
    OUTAGES.succeeded("a test", ("mongodb",))
    yield
    OUTAGES.succeeded("a test", ("mongodb",))


async def test_partitions_given_while_the_database_is_away_are_taken_once_it_answers() -> None:
    store = _FlakyStore(failures=3)
    engine = _engine(store)
    await asyncio.wait_for(engine.take({2, 5}), 10)
    assert engine.epochs == {2: 1, 5: 1}
    assert sorted(t["key"] for t in engine.timers.armed) == ["t2", "t5"]
    # Their journalled outboxes are the loop's to send, under its own retries.
    assert engine._unsent == {2, 5}


async def test_a_stop_ends_a_take_that_cannot_go_through() -> None:
    engine = _engine(_FlakyStore(failures=10**6))
    taking = asyncio.create_task(engine.take({1}))
    await asyncio.sleep(0)
    engine.stopping.set()
    await asyncio.wait_for(taking, 5)
    assert engine.epochs == {}


async def test_partitions_are_let_go_even_when_their_last_writes_cannot_settle() -> None:
    store = _FlakyStore(failures=0)
    engine = _engine(store)
    await engine.take({1, 2})
    store.failures = 1
    await engine.release({1})
    assert engine.epochs == {2: 1}
    assert engine._unsent == {2}
    assert [t["key"] for t in engine.timers.armed] == ["t2"]
