"""Reaching the entity twins: starting one (once) and signalling a change to it, through an ops client
of the system namespace (the control plane's activities hold one; from outside, one is opened per
request). Both need the control plane to be bootstrapped."""

from __future__ import annotations

from perdure.infra.settings import Settings
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.twin_change import TwinChange
from perdure.platform.control.workflow_ids import ENTITY_TWIN, Entity, twin_id
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.stores.control_store import ControlError


async def control_plane_ready(settings: Settings) -> bool:
    async with ControlResources(settings) as resources:
        try:
            await resources.control.get_namespace(settings.system_namespace)
            return True
        except ControlError:
            return False


async def start_twins(settings: Settings, entities: list[tuple[Entity, str]]) -> None:
    """Start the twins of ``entities`` (a twin started before is left as it is: the start's request id
    is the twin's own, so the engine recognises it)."""
    async with await OpsClient.connect(settings, settings.system_namespace) as ops:
        await start_twins_through(ops, entities)


async def start_twins_through(ops: OpsClient, entities: list[tuple[Entity, str]]) -> None:
    for entity, key in entities:
        workflow_id = twin_id(entity, key)
        await ops.start_workflow(ENTITY_TWIN, entity, key, id=workflow_id, request_id=f"twin:{workflow_id}")


async def twin_if_bootstrapped(settings: Settings, entity: Entity, key: str) -> None:
    """Give a newly made entity its twin, once there is a control plane to run it (bootstrapping
    starts the twins of what exists before)."""
    if await control_plane_ready(settings):
        await start_twins(settings, [(entity, key)])


async def signal_twin(settings: Settings, entity: Entity, key: str, change: TwinChange) -> None:
    """Send ``change`` to the entity's twin (``send_change``)."""
    if not await control_plane_ready(settings):
        raise ControlError(
            "the control plane is not bootstrapped: run `perdure controlplane bootstrap --cell CELL`"
        )
    async with await OpsClient.connect(settings, settings.system_namespace) as ops:
        await send_change(ops, entity, key, change)


async def send_change(ops: OpsClient, entity: Entity, key: str, change: TwinChange) -> None:
    """Signal ``change`` to the entity's twin, started first if it is not (the start reaches it before
    the signal, on the same partition)."""
    await start_twins_through(ops, [(entity, key)])
    await ops.signal(twin_id(entity, key), "change", change.model_dump(mode="json"))
