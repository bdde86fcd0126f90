"""The engine reads on while a batch's outboxes wait for the broker's confirms, but writes no run again and
commits no offset before they are confirmed; an outbox the broker refused is sent again from the runs
(invariant 4 of docs/architecture.md)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from perdure.platform.cell.engine import CellEngine

TP = TopicPartition("perdure.cell.c.tasks", 0)


@dataclass
class _Store:
    writes: list[list[Any]] = field(default_factory=list)

    async def write(self, entries: list[Any], epochs: dict[int, int], offsets: Any) -> None:
        self.writes.append(entries)


@dataclass
class _Sender:
    """A broker that confirms a send once its gate opens, or refuses it."""

    gates: list[asyncio.Event] = field(default_factory=list)
    refuse: bool = False
    sent: list[list[Any]] = field(default_factory=list)
    timers: Any = None

    async def send(self, items: list[Any], sent_tasks: frozenset[str] = frozenset()) -> None:
        self.sent.append(items)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.refuse:
            raise ConnectionError("the broker went away")


@dataclass
class _Consumer:
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


def _engine() -> tuple[CellEngine, _Store, _Sender, _Consumer]:
    store, sender, consumer = _Store(), _Sender(), _Consumer()
    engine = CellEngine(
        cell=cast(Any, None),
        store=cast(Any, store),
        apps=cast(Any, None),
        tasks=cast(Any, None),
        sender=cast(Any, sender),
        consumer=cast(Any, consumer),
    )
    engine.epochs[0] = 1
    return engine, store, sender, consumer


def _entry(workflow_id: str) -> Any:
    state = SimpleNamespace(namespace="n", workflow_id=workflow_id)
    return SimpleNamespace(state=state, partition=0, new_outbox=[f"dispatch of {workflow_id}"])


def _batch(first: int, last: int) -> dict[TopicPartition, list[Any]]:
    return {TP: [SimpleNamespace(offset=first), SimpleNamespace(offset=last)]}


async def _turn() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_run_is_written_again_only_once_its_last_outbox_is_confirmed() -> None:
    engine, store, sender, consumer = _engine()
    first = _batch(0, 1)
    assert await engine._write_and_send(cast(Any, first), [_entry("a")], {0: (0, 1)}, frozenset())
    await _turn()
    assert len(sender.sent) == 1 and len(store.writes) == 1  # sent, not yet confirmed: the engine goes on
    engine._commit_once_sent(cast(Any, first))

    second = asyncio.create_task(
        engine._write_and_send(cast(Any, _batch(2, 2)), [_entry("a")], {0: (2, 2)}, frozenset())
    )
    await _turn()
    assert len(store.writes) == 1 and consumer.commits == []  # both wait for the confirm
    sender.gates[0].set()
    assert await second
    await engine._settle_commit()
    assert len(store.writes) == 2 and consumer.commits == [{TP: 2}]


async def test_an_outbox_the_broker_refused_is_sent_again_and_its_batch_not_committed() -> None:
    engine, _, sender, consumer = _engine()
    sender.refuse = True
    batch = _batch(5, 7)
    assert await engine._write_and_send(cast(Any, batch), [_entry("a")], {0: (5, 7)}, frozenset())
    engine._commit_once_sent(cast(Any, batch))
    await _turn()
    sender.gates[0].set()
    await engine._settle_commit()  # failed, and said so in the log
    with pytest.raises(ConnectionError):
        await engine._settle_sends()
    assert consumer.commits == []
    # Read again from the batch's first record; its partition's pending outboxes are sent first.
    assert consumer.seeks == [(TP, 5)] and engine._unsent == {0}
    assert engine._sending == []


async def test_a_refused_outbox_of_a_partition_let_go_meanwhile_is_left_to_its_next_owner() -> None:
    engine, _, sender, consumer = _engine()
    sender.refuse = True
    assert await engine._write_and_send(cast(Any, _batch(0, 0)), [_entry("a")], {0: (0, 0)}, frozenset())
    engine.epochs.clear()  # revoked: its offsets are the next owner's to read
    await _turn()
    sender.gates[0].set()
    with pytest.raises(ConnectionError):
        await engine._settle_sends()
    assert consumer.seeks == [] and engine._unsent == set()
