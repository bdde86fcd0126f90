"""A task that runs every few seconds until told to stop, a failure logged and tried again next time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from perdure.infra.outages import OUTAGES


async def every(
    seconds: float,
    stopping: asyncio.Event,
    step: Callable[[], Awaitable[None]],
    log: logging.Logger,
    what: str,
) -> None:
    while not stopping.is_set():
        try:
            await step()
        except Exception as exc:
            # A dependency's outage is told once (perdure.outages); the next try comes as usual.
            OUTAGES.failed(what, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
