"""Outages of the services a process depends on (Kafka, MongoDB, RabbitMQ), told once: one warning when a
dependency goes away, one info line with the outage's length when it is back, and the retries between
them paced by exponential backoff with jitter instead of a log line each. Metrics: whether each
dependency is up (``perdure.dependency.up``), outages seen, retries made. docs/architecture.md,
"Outages".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import aiormq.exceptions
from aio_pika.exceptions import AMQPError
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

log = logging.getLogger("perdure.outages")
meter = metrics.get_meter("perdure.outages")
outages_seen = meter.create_counter("perdure.dependency.outages", description="outages of a dependency seen")
retries_made = meter.create_counter(
    "perdure.dependency.retries", description="attempts retried because a dependency failed"
)

DEPENDENCIES = ("kafka", "mongodb", "rabbitmq")
T = TypeVar("T")


def dependency_of(exc: BaseException) -> str | None:
    """The dependency an error comes from, if it comes from one (else it is the code's own)."""
    # Imported here: a tenant's worker and client use this module through their AMQP connection and
    # carry neither Kafka's client nor MongoDB's (nor should they pay for importing them).
    from aiokafka.errors import KafkaError
    from pymongo.errors import PyMongoError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PyMongoError):
            return "mongodb"
        if isinstance(current, KafkaError):
            return "kafka"
        # A channel used while its connection is gone says so with a RuntimeError of its own.
        if isinstance(
            current, AMQPError | aiormq.exceptions.AMQPError | aiormq.exceptions.ChannelInvalidStateError
        ):
            return "rabbitmq"
        if (library := _raised_in(current)) is not None:
            return library
        current = current.__cause__ or current.__context__
    return None


_LIBRARIES = {"aio_pika": "rabbitmq", "aiormq": "rabbitmq", "aiokafka": "kafka", "pymongo": "mongodb"}


def _raised_in(exc: BaseException) -> str | None:
    """The dependency whose client raised ``exc`` itself (aio-pika raises a bare RuntimeError for a
    connection that is reconnecting, say)."""
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is None:
        return None
    path = traceback.tb_frame.f_code.co_filename.replace("\\", "/")
    for package, dependency in _LIBRARIES.items():
        if f"/{package}/" in path:
            return dependency
    return None


def backoff_seconds(attempt: int, *, base: float = 0.2, cap: float = 10.0) -> float:
    """The pause before retry ``attempt`` (1, 2, ...): doubling from ``base`` up to ``cap``, the upper
    half drawn at random so that processes retrying together spread out."""
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass
class _Outage:
    since: float
    error: str
    retries: int = 0


@dataclass
class Outages:
    """What one process knows of its dependencies' outages."""

    down: dict[str, _Outage] = field(default_factory=dict)
    _attempts: dict[str, int] = field(default_factory=dict)
    # How to ask a dependency whether it answers again: an idle process has no work of its own whose
    # success would say so.
    _probes: dict[str, Callable[[], Awaitable[object]]] = field(default_factory=dict)
    _probing: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def probe_with(self, dependency: str, probe: Callable[[], Awaitable[object]]) -> None:
        self._probes[dependency] = probe

    def failed(self, operation: str, exc: BaseException, *, cap: float = 10.0) -> float:
        """Note a failed attempt of ``operation`` and return the pause before its next one (at most
        ``cap``: the engine's own loops come back within two seconds of their dependency). An error of
        a dependency opens (or continues, silently) its outage; any other error is the code's own and
        is logged with its traceback, paced the same way."""
        attempt = self._attempts[operation] = self._attempts.get(operation, 0) + 1
        dependency = dependency_of(exc)
        pause = backoff_seconds(attempt, cap=cap)
        if dependency is None:
            log.error("%s failed; retrying", operation, exc_info=exc, extra={"in_seconds": round(pause, 2)})
            return pause
        self.went_away(dependency, f"{operation}: {type(exc).__name__}: {exc}")
        return pause

    def went_away(self, dependency: str, error: str) -> None:
        outage = self.down.get(dependency)
        if outage is None:
            self.down[dependency] = _Outage(time.monotonic(), error[:500])
            outages_seen.add(1, {"dependency": dependency})
            log.warning(
                "a dependency is unreachable; retrying with backoff until it is back",
                extra={"dependency": dependency, "error": error[:500]},
            )
            self._start_probing(dependency)
            return
        outage.retries += 1
        retries_made.add(1, {"dependency": dependency})

    def succeeded(self, operation: str, uses: Iterable[str]) -> None:
        """``operation`` went through: the dependencies it ``uses`` are up."""
        self._attempts.pop(operation, None)
        for dependency in uses:
            outage = self.down.pop(dependency, None)
            if outage is not None:
                log.info(
                    "a dependency is back",
                    extra={
                        "dependency": dependency,
                        "outage_seconds": round(time.monotonic() - outage.since, 1),
                        "retries": outage.retries,
                    },
                )

    def _start_probing(self, dependency: str) -> None:
        probe = self._probes.get(dependency)
        running = self._probing.get(dependency)
        if probe is None or (running is not None and not running.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # told from a thread of a library's: its own retries will tell again
            return
        self._probing[dependency] = loop.create_task(
            self._probe(dependency, probe), name=f"probe-{dependency}"
        )

    async def _probe(self, dependency: str, probe: Callable[[], Awaitable[object]]) -> None:
        attempt = 0
        while dependency in self.down:
            attempt += 1
            await asyncio.sleep(backoff_seconds(attempt, base=0.5))
            try:
                async with asyncio.timeout(10):
                    await probe()
            except Exception:
                continue
            self.succeeded(f"probing {dependency}", (dependency,))

    def stop_probing(self) -> None:
        for task in self._probing.values():
            task.cancel()
        self._probing.clear()
        self._probes.clear()

    def unreachable(self) -> list[str]:
        return sorted(self.down)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        for dependency in DEPENDENCIES:
            yield Observation(0 if dependency in self.down else 1, {"dependency": dependency})


OUTAGES = Outages()  # one per process: its dependencies are the same for all its parts
meter.create_observable_gauge(
    "perdure.dependency.up",
    callbacks=[OUTAGES._observe],
    description="1 while a dependency answers, 0 in an outage",
)


async def pause(seconds: float, stopping: asyncio.Event) -> None:
    """Wait ``seconds``, or less if the process is stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


class StoppedWhileWaiting(Exception):
    """The process was asked to stop while a step waited for a dependency to come back."""


async def until_reachable(
    operation: str, step: Callable[[], Awaitable[T]], stopping: asyncio.Event, uses: Iterable[str]
) -> T:
    """``step``'s result, retried with backoff while its dependencies are unreachable (a process started
    during an outage waits it out, as one running through it does); any other error is raised. Raises
    ``StoppedWhileWaiting`` if ``stopping`` is set meanwhile. ``step`` must be safe to run again after a
    failure (closing what it opened)."""
    while True:
        try:
            result = await step()
        except Exception as exc:
            if dependency_of(exc) is None:
                raise
            await pause(OUTAGES.failed(operation, exc), stopping)
            if stopping.is_set():
                raise StoppedWhileWaiting(operation) from exc
            continue
        OUTAGES.succeeded(operation, uses)
        return result
