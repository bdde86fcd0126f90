"""An asyncio event loop with no clock and no I/O, on which workflow code runs.

Only ``call_soon`` scheduling exists: ready callbacks run in FIFO order until none is left, which makes
the interleaving of the workflow's tasks a function of the events fed to it. Anything that would need a
real clock, a thread or a socket raises an error naming the workflow-safe replacement.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
from asyncio import events
from collections.abc import Callable, Coroutine
from typing import Any

from perdure.platform.core.determinism_guard import DeterminismGuard
from perdure.platform.core.failures import NondeterministicCallError


class DeterministicLoop(asyncio.AbstractEventLoop):
    def __init__(self) -> None:
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._closed = False
        self._running = False
        self.errors: list[dict[str, Any]] = []
        self._guard = DeterminismGuard()

    # -- scheduling -------------------------------------------------------------------------------
    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        raise NondeterministicCallError("threads are not allowed in workflow code: use an activity")

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise NondeterministicCallError(
            "asyncio.sleep() and asyncio timeouts are not allowed in workflow code: use workflow.sleep() "
            "or workflow.wait_condition(..., timeout=...)"
        )

    def call_at(self, when: float, callback: Callable[..., object], *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.call_later(0, callback)

    def time(self) -> float:
        raise NondeterministicCallError(
            "the event loop clock is not available in workflow code: use workflow.now()"
        )

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any:  # type: ignore[override]
        raise NondeterministicCallError(
            "threads and executors are not allowed in workflow code: use an activity"
        )

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise NondeterministicCallError("network I/O is not allowed in workflow code: use an activity")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise NondeterministicCallError("network I/O is not allowed in workflow code: use an activity")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        raise NondeterministicCallError("subprocesses are not allowed in workflow code: use an activity")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        raise NondeterministicCallError("subprocesses are not allowed in workflow code: use an activity")

    # -- running ----------------------------------------------------------------------------------
    def run_until_quiescent(self) -> None:
        """Run every ready callback, and those they schedule, until nothing is ready."""
        previous = events._get_running_loop()
        events._set_running_loop(self)
        self._running = True
        try:
            with self._guard:
                while self._ready:
                    handle = self._ready.popleft()
                    if not handle._cancelled:
                        handle._run()
        finally:
            self._running = False
            events._set_running_loop(previous)

    def has_ready(self) -> bool:
        return bool(self._ready)

    # -- the rest of the interface ------------------------------------------------------------------
    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._ready.clear()
        self._closed = True

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    def get_exception_handler(self) -> None:
        return None

    def set_exception_handler(self, handler: Any) -> None:
        raise NondeterministicCallError("workflow code cannot replace the event loop's exception handler")

    def run_forever(self) -> None:
        raise RuntimeError("the workflow loop is driven by its workflow instance")

    def run_until_complete(self, future: Any) -> Any:
        raise RuntimeError("the workflow loop is driven by its workflow instance")

    def stop(self) -> None:
        pass

    async def shutdown_asyncgens(self) -> None:
        pass

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        pass

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass
