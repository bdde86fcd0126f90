"""What admission hands to the control plane from a tenant's ingress: schedule and batch requests, each
with the namespace of the vhost it arrived on (``Admission._accept_control_command``)."""

from __future__ import annotations

from perdure.infra.settings import Settings
from perdure.platform.control import tenant_batches, tenant_schedules
from perdure.platform.protocol.ingress_wire import BatchCommand, ControlCommand, IngressReply


async def carry_out(settings: Settings, namespace: str, command: ControlCommand) -> IngressReply:
    if isinstance(command, BatchCommand):
        return await tenant_batches.carry_out(settings, namespace, command)
    return await tenant_schedules.carry_out(settings, namespace, command)
