"""The task dump names every coroutine a task is suspended in, not only its outermost one."""

from __future__ import annotations

import asyncio

from perdure.infra.task_dump import awaiting


async def _inner(event: asyncio.Event) -> None:
    await event.wait()


async def _outer(event: asyncio.Event) -> None:
    await _inner(event)


async def test_the_whole_chain_of_a_waiting_task_is_shown() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_outer(event))
    await asyncio.sleep(0)
    chain = awaiting(task)
    assert [line.rsplit(" in ", 1)[1] for line in chain[:3]] == ["_outer", "_inner", "wait"]
    event.set()
    await task
