"""``kill -USR1 <pid>`` of a long-running process logs where each of its asyncio tasks waits: the chain
of coroutines it is suspended in, outermost first (what a process that looks stuck is waiting on,
without stopping it, as a JVM's thread dump shows)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

log = logging.getLogger("perdure.tasks")
DEPTH = 40


def dump_tasks_on_sigusr1() -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump)


def awaiting(task: asyncio.Task[Any]) -> list[str]:
    """``file:line in function`` of each coroutine the task is suspended in, outermost first.
    (``Task.get_stack`` gives only the outermost frame of a suspended task.)"""
    chain: list[str] = []
    step: Any = task.get_coro()
    while step is not None and len(chain) < DEPTH:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        step = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
    return chain


def _dump() -> None:
    stacks = {task.get_name(): awaiting(task) for task in asyncio.all_tasks()}
    log.warning("asyncio tasks, as asked (SIGUSR1)", extra={"tasks": len(stacks), "awaiting": stacks})
