"""``kill -USR1 <pid>`` of a long-running process logs the stack of each of its asyncio tasks: what a
process that looks stuck is waiting on, without stopping it (as a JVM's thread dump does)."""

from __future__ import annotations

import asyncio
import io
import logging
import signal

log = logging.getLogger("perdure.tasks")
FRAMES = 25


def dump_tasks_on_sigusr1() -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, _dump)


def _dump() -> None:
    stacks = {}
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=FRAMES, file=out)
        stacks[task.get_name()] = out.getvalue()
    log.warning("asyncio tasks, as asked (SIGUSR1)", extra={"tasks": len(stacks), "stacks": stacks})
