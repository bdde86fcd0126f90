"""The system namespace: where the control plane's own workflows run (the scheduled billing export, ...),
on the platform itself. It belongs to no account and is never throttled; it lives on the control cell
named when the control plane is bootstrapped (else the cell placement picks). No workflow can make it
(none runs before it): it is provisioned by the same steps, in this process."""

from __future__ import annotations

from perdure.infra.settings import Settings
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.namespace_requests import provision_namespace
from perdure.platform.control.provisioning import place
from perdure.platform.stores.control_store import ControlError, NamespaceRecord
from perdure.platform.tenancy.model import Quota

SYSTEM_APP = "perdure.platform.processes.system_app:app"


async def ensure_system_namespace(settings: Settings, cell: str | None = None) -> NamespaceRecord:
    """The system namespace, created if it is missing (on ``cell``, or a cell placement picks)."""
    async with ControlResources(settings) as resources:
        control = resources.control
        try:
            existing = await control.get_namespace(settings.system_namespace)
        except ControlError:
            existing = None
        if existing is not None and cell is not None and existing.cell != cell:
            name = settings.system_namespace
            raise ControlError(f"the system namespace {name!r} is on cell {existing.cell!r}, not {cell!r}")
        # Its load is the platform's own: it is placed as if it asked for nothing.
        placed = existing.cell if existing else cell or await place(control, 0, settings.system_namespace)
    provisioned = await provision_namespace(
        settings, settings.system_namespace, SYSTEM_APP, cell=placed, quota=Quota.unthrottled()
    )
    return provisioned.record
