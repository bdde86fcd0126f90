"""Throttled requests, metered: admission notes each request that waits for its namespace's tokens, and
this sends them to the metering topic in batches (an operational metric: counted per namespace and
hour like the billed ones, shown on the namespace's page, never priced).

Noting never waits on Kafka: a throttled request is on admission's hot path. A batch that cannot be sent
(Kafka away) is kept and sent again; past ``MAX_KEPT`` records the oldest are dropped, so an outage costs
an undercount of this figure, never memory without bound nor a billed action. Each record's id is its
request's, so a request delivered twice (a redelivery after a crash) is counted once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from perdure.infra.outages import OUTAGES, pause
from perdure.platform.core.usage import UsageRecord, throttled_usage

log = logging.getLogger(__name__)
SEND_EVERY_SECONDS = 1.0
MAX_KEPT = 50_000

SendRecords = Callable[[Sequence[UsageRecord]], Awaitable[None]]


class ThrottleMeter:
    def __init__(
        self, send: SendRecords, *, every: float = SEND_EVERY_SECONDS, max_kept: int = MAX_KEPT
    ) -> None:
        self._send = send
        self._every = every
        self._kept: collections.deque[UsageRecord] = collections.deque(maxlen=max_kept)
        self._noted = asyncio.Event()
        self.dropped = 0

    def note(self, namespace: str, request_id: str, at: datetime | None = None) -> None:
        if len(self._kept) == self._kept.maxlen:
            self.dropped += 1
        self._kept.append(throttled_usage(namespace, request_id, at or datetime.now(UTC)))
        self._noted.set()

    @property
    def waiting(self) -> int:
        return len(self._kept)

    async def flush(self) -> None:
        """Send what is kept (raising if Kafka refuses: it stays kept)."""
        batch = list(self._kept)
        if not batch:
            return
        await self._send(batch)
        for _ in batch:
            self._kept.popleft()

    async def run(self, stopping: asyncio.Event) -> None:
        """Send every ``every`` seconds while there is something to send, until ``stopping``; then once
        more, so that a graceful stop loses nothing it could send."""
        while not stopping.is_set():
            self._noted.clear()
            try:
                await self.flush()
            except Exception as exc:
                await pause(OUTAGES.failed("sending throttled-request records", exc, cap=5.0), stopping)
                continue
            waits = [asyncio.ensure_future(self._noted.wait()), asyncio.ensure_future(stopping.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            if not stopping.is_set():
                await pause(self._every, stopping)  # gather a batch: one send per second at most
        try:
            await self.flush()
        except Exception:
            log.warning("throttled-request records not sent at stop", extra={"records": self.waiting})
