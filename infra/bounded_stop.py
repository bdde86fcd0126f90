"""Stopping a long-running process within a bound (docs/architecture.md, "Bounded shutdown").

A process stops in named steps (admission, workers, engine, connections, ...), each given a share of one
budget: a step that overruns its share is cancelled and named in one error line with the steps that never
ran, and the process goes on to exit. A CLI process whose stop overran ends at once (the interpreter's
own clean-up would wait for the same stuck calls). Cancelling is not enough on its own: a thread that
never returns (tenant code in a worker, a blocking library call) or an event loop that never gets control
again keeps the interpreter alive, so a watchdog thread armed with the stop signal ends the process a
few seconds past the bound, whatever it is doing. A rollout that restarts a process never waits longer
than that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("perdure.stop")

# How long past the bound the watchdog waits for the orderly stop (which cancels what overran it and
# closes what it can) before it ends the process itself.
WATCHDOG_GRACE_SECONDS = 5.0
EXIT_CODE_OVERRAN = 70  # EX_SOFTWARE: the process did not stop by itself within the bound


class StopOverranError(RuntimeError):
    """A process's stop abandoned steps at its bound (logged with them); the process exits with
    ``EXIT_CODE_OVERRAN`` so whatever restarts it can tell."""


class BoundedStop:
    """The steps of one process's stop, within one budget."""

    def __init__(self, process: str, seconds: float) -> None:
        self.process = process
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.abandoned: list[str] = []
        self.failed: list[str] = []

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def step(self, name: str, stopping: Callable[[], Awaitable[object]], *, share: float = 1.0) -> None:
        """Run one step for at most ``share`` of the bound and what is left of it: past that it is
        abandoned (cancelled, or not run at all), and the next steps go on with what remains, so one
        dependency that hangs does not keep the others from closing. A failure is logged, not raised."""
        allowed = min(self.remaining(), self.seconds * share)
        if allowed == 0:
            self.abandoned.append(name)
            return
        try:
            async with asyncio.timeout(allowed):
                await stopping()
        except TimeoutError:
            self.abandoned.append(name)
        except Exception:
            self.failed.append(name)
            log.exception(
                "a step of the stop failed; going on", extra={"stopping": self.process, "step": name}
            )

    def report(self) -> None:
        if self.abandoned:
            log.error(
                "stop overran its bound: abandoned what was left",
                extra={"stopping": self.process, "bound_seconds": self.seconds, "abandoned": self.abandoned},
            )

    def raise_if_overran(self) -> None:
        if self.abandoned:
            raise StopOverranError(f"{self.process} abandoned {', '.join(self.abandoned)} at its stop bound")


def stop_on_signals(stop: asyncio.Event, bound_seconds: float, process: str) -> None:
    """SIGTERM and SIGINT set ``stop`` and arm the watchdog that ends the process if it is still alive
    ``WATCHDOG_GRACE_SECONDS`` past the bound; a second signal does not re-arm it."""
    loop = asyncio.get_running_loop()
    armed = threading.Event()

    def requested() -> None:
        stop.set()
        if not armed.is_set():
            armed.set()
            watchdog = threading.Timer(
                bound_seconds + WATCHDOG_GRACE_SECONDS, _end_now, (process, bound_seconds)
            )
            watchdog.daemon = True
            watchdog.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, requested)


def _end_now(process: str, bound_seconds: float) -> None:
    threads = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
    log.error(
        "process still alive past its stop bound: ending it",
        extra={"stopping": process, "bound_seconds": bound_seconds, "threads": threads},
    )
    end_process(EXIT_CODE_OVERRAN)


def end_process(code: int) -> None:
    """End the process now, its logs flushed: for when threads that cannot be stopped (tenant code)
    would keep the interpreter from exiting."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # a closed stream must not keep the process alive
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
