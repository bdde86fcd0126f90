"""A tenant's schedules through its client: ``Client.create_schedule`` makes one, a ``ScheduleHandle``
steers it. Each request goes to the namespace's ingress like any other and is carried out by the
control plane, where schedules run as durable workflows (docs/schedules.md); a request sent again under
its request id (the client does so when an answer is slow) is carried out once."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from perdure.platform.core.schedule_policy import OverlapPolicy
from perdure.platform.protocol.ingress_wire import IngressReply, ScheduleAction, ScheduleCommand
from perdure.tenants.control_sender import CONTROL_REQUEST_TIMEOUT, ControlCommandSender


class ScheduleHandle:
    """One schedule of the client's namespace, by its id."""

    def __init__(self, client: ControlCommandSender, schedule_id: str) -> None:
        self._client = client
        self.id = schedule_id

    async def describe(self) -> dict[str, Any]:
        """What the schedule starts and when, its state (paused, with its note), its recent and next
        actions, and counts of what it started, skipped and missed."""
        reply = await self._send("describe")
        return reply.schedule or {}

    async def pause(self, note: str = "") -> str:
        return await self._request("pause", note=note)

    async def unpause(self, note: str = "") -> str:
        return await self._request("unpause", note=note)

    async def trigger(self, overlap: OverlapPolicy | None = None) -> str:
        """Take an action now (under ``overlap``, else the schedule's own policy); what became of it."""
        return await self._request("trigger", overlap=overlap)

    async def backfill(self, start: datetime, end: datetime, overlap: OverlapPolicy | None = None) -> str:
        """Take the actions the schedule would have taken from ``start`` to ``end`` (both inclusive,
        timezone-aware)."""
        return await self._request("backfill", start=start, end=end, overlap=overlap)

    async def delete(self) -> None:
        """Delete the schedule (the runs it started go on)."""
        await self._request("delete")

    async def _request(self, action: ScheduleAction, **fields: Any) -> str:
        body = {name: value for name, value in fields.items() if value is not None}
        reply = await self._send(action, request=_json(body))
        return reply.outcome or ""

    async def _send(self, action: ScheduleAction, **fields: Any) -> IngressReply:
        command = ScheduleCommand(request_id=str(uuid.uuid4()), action=action, schedule_id=self.id, **fields)
        return await self._client._call(command, CONTROL_REQUEST_TIMEOUT)


def create_command(schedule_id: str, definition: dict[str, Any]) -> ScheduleCommand:
    return ScheduleCommand(
        request_id=str(uuid.uuid4()), action="create", schedule_id=schedule_id, definition=_json(definition)
    )


def list_command() -> ScheduleCommand:
    return ScheduleCommand(request_id=str(uuid.uuid4()), action="list")


def _json(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as JSON values (times as ISO text, durations as seconds), as the wire carries them."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, datetime):
            out[name] = value.isoformat()
        elif isinstance(value, timedelta):
            out[name] = value.total_seconds()
        else:
            out[name] = value
    return out
