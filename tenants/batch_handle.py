"""A tenant's batch operations through its client: ``Client.start_batch`` terminates, cancels or
signals every run a visibility query matches, at a bounded rate, as a durable batch on the control plane
(docs/batch.md); a ``BatchHandle`` follows or stops it. Each request goes to the namespace's ingress like
any other; a start sent again under its request id (the client does so when an answer is slow) starts
one batch."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

from perdure.platform.protocol.ingress_wire import BatchAction, BatchCommand, IngressReply
from perdure.tenants.control_sender import CONTROL_REQUEST_TIMEOUT, ControlCommandSender


class BatchHandle:
    """One batch of the client's namespace, by its id. ``matching`` is how many runs the query matched
    when the batch was started (None for a handle got by id)."""

    def __init__(self, client: ControlCommandSender, batch_id: str, matching: int | None = None) -> None:
        self._client = client
        self.id = batch_id
        self.matching = matching

    async def describe(self) -> dict[str, Any]:
        """Its operation, query, rate and state (``running``, ``completed``, ``stopped``, ``failed``),
        its counts (``succeeded``, ``failed``, ``skipped``, ``total_estimate``) and recent failures."""
        return (await self._send("describe")).batch or {}

    async def wait(self, timeout: float = 600.0, poll_seconds: float = 1.0) -> dict[str, Any]:
        """Its description once it is no longer running (``completed``, ``stopped`` or ``failed``),
        looked at every ``poll_seconds``; ``TimeoutError`` if it still runs after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in itertools.count():  # a batch's end is not announced: it is looked at
            described = await self.describe()
            if described.get("state") != "running":
                return described
            if loop.time() >= deadline:
                break
            await asyncio.sleep(min(poll_seconds, max(0.0, deadline - loop.time())))
        raise TimeoutError(f"batch {self.id!r} still runs after {timeout:g} s")

    async def stop(self, reason: str = "") -> dict[str, Any]:
        """Stop it after the page it is on (the runs it reached stay as they are); its description."""
        return (await self._send("stop", reason=reason)).batch or {}

    async def _send(self, action: BatchAction, **fields: Any) -> IngressReply:
        command = BatchCommand(request_id=str(uuid.uuid4()), action=action, batch_id=self.id, **fields)
        return await self._client._call(command, CONTROL_REQUEST_TIMEOUT)


def start_command(definition: dict[str, Any]) -> BatchCommand:
    return BatchCommand(
        request_id=str(uuid.uuid4()),
        action="start",
        batch_id=str(definition.get("batch_id", "")),
        definition=definition,
    )


def list_command() -> BatchCommand:
    return BatchCommand(request_id=str(uuid.uuid4()), action="list")
