"""What the schedule and batch handles send their requests through: the client's ingress call. A
protocol rather than ``Client`` itself, so that the handles' modules do not import the client's."""

from __future__ import annotations

from typing import Protocol

from perdure.platform.protocol.ingress_wire import ControlCommand, IngressReply

# A schedule's or batch's request is confirmed by the control plane (a create waits for the schedule's
# workflow to start, a stop for the batch to stop), which can take longer than a plain request.
CONTROL_REQUEST_TIMEOUT = 60.0


class ControlCommandSender(Protocol):
    async def _call(self, request: ControlCommand, timeout: float | None = None) -> IngressReply: ...
