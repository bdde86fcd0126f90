"""Closing a connection its owner forgot to close, before the event loop ends.

A script that ends with ``asyncio.run`` without closing its client leaves the broker connection's
tasks to be cancelled with every other task, and the close they then start runs after the loop has
closed: Python prints "Event loop is closed" tracebacks and "Task was destroyed but it is pending".
A guard task waits for the loop's end instead; ``asyncio.run`` cancels it with the other tasks and
waits for it, so the connection is closed while the loop still runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

CLOSE_SECONDS = 5.0


class CloseAtLoopEnd:
    def __init__(self, close: Callable[[], Awaitable[None]]) -> None:
        self._close = close
        self._released = False
        self._task = asyncio.get_running_loop().create_task(
            self._guard(), name="perdure: close at the loop's end"
        )

    async def _guard(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not self._released:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(self._close(), CLOSE_SECONDS)
            raise

    def release(self) -> None:
        """The owner closes by itself: the guard goes without closing anything."""
        self._released = True
        self._task.cancel()
