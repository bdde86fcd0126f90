"""The backlog admission reads without waiting: an estimate that never falls below the true backlog, renewed
in the background (the Kafka clients are never started: the measurement is scripted)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from perdure.infra.consumer_backlog import ConsumerBacklog


class ScriptedBacklog(ConsumerBacklog):
    """Each measurement waits until the test lets it answer with the value it gives."""

    def __init__(self) -> None:
        super().__init__({"bootstrap_servers": "unused:9092"}, "t", 2, "g", every_seconds=0.0)
        self.answers: asyncio.Queue[int | Exception] = asyncio.Queue()
        self.measurements = 0

    async def _measure(self) -> int:
        self.measurements += 1
        answer = await self.answers.get()
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
async def backlog() -> AsyncIterator[ScriptedBacklog]:
    scripted = ScriptedBacklog()
    yield scripted
    await scripted.stop_measuring()  # the last estimate's measurement waits for an answer that never comes


async def test_no_room_is_known_before_a_measurement_and_records_waits_for_one(
    backlog: ScriptedBacklog,
) -> None:
    assert backlog.estimate() == sys.maxsize
    waiting = asyncio.create_task(backlog.records())
    await asyncio.sleep(0)
    assert not waiting.done()
    await backlog.answers.put(7)
    assert await waiting == 7
    assert backlog.measurements == 1  # the estimate's measurement was awaited, not a second one taken


async def test_the_estimate_answers_at_once_and_counts_what_was_admitted_since(
    backlog: ScriptedBacklog,
) -> None:
    await backlog.answers.put(10)
    await backlog.records()
    backlog.admitted(5)
    assert backlog.estimate() == 15  # a measurement is now in flight; the estimate did not wait for it
    backlog.admitted(3)  # admitted while it runs: may or may not be in it, so it stays counted
    await backlog.answers.put(4)
    await backlog.records()
    assert backlog.estimate() == 4 + 3


async def test_a_failed_measurement_keeps_the_last_known_value(backlog: ScriptedBacklog) -> None:
    await backlog.answers.put(20)
    await backlog.records()
    backlog.admitted(2)
    await backlog.answers.put(ConnectionError("broker away"))
    assert await backlog.records() == 22
    await backlog.answers.put(1)
    assert await backlog.records() == 1
