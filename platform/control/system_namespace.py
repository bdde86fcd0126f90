"""The system namespace: where the control plane's own workflows run (the scheduled billing export, ...),
on the platform itself. It belongs to no account and is never throttled."""

from __future__ import annotations

from perdure.infra.settings import Settings
from perdure.platform.cell.control_store import ControlError, NamespaceRecord
from perdure.platform.cell.provisioning import provision_namespace
from perdure.platform.tenancy.model import Quota

SYSTEM_APP = "perdure.platform.control.system_app:app"


async def ensure_system_namespace(settings: Settings, cell: str | None = None) -> NamespaceRecord:
    """Create the system namespace if it is missing (on ``cell``, or the least loaded cell)."""
    try:
        provisioned = await provision_namespace(
            settings, settings.system_namespace, SYSTEM_APP, cell=cell, quota=Quota.unthrottled()
        )
    except ControlError as exc:
        raise ControlError(f"the system namespace {settings.system_namespace!r}: {exc}") from None
    return provisioned.record
