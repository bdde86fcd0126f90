"""Bootstrapping the control plane: the system namespace on the control cell, and the control plane's
long-running workflows started there (each once: bootstrapping again changes nothing)."""

from __future__ import annotations

from datetime import date

from perdure.billing.export_schedule import SCHEDULE_ID, BillingExportSchedule
from perdure.infra.settings import Settings
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.system_namespace import ensure_system_namespace
from perdure.platform.control.twin_requests import start_twins
from perdure.platform.control.workflow_ids import Entity
from perdure.platform.core.definitions import workflow_name_of
from perdure.platform.messaging.ops_client import OpsClient
from perdure.tenants.client_errors import WorkflowNotFoundError


async def bootstrap_control_plane(settings: Settings, cell: str | None, billing_from: date) -> list[str]:
    """Returns what it did, a line each. The control cell must run (`perdure cell run`) for the
    workflows to make progress."""
    record = await ensure_system_namespace(settings, cell)
    done = [f"system namespace {record.name} on control cell {record.cell}"]
    async with await OpsClient.connect(settings, record.name) as ops:
        try:
            running = (await ops.describe(SCHEDULE_ID))["status"] in ("running", "blocked")
        except WorkflowNotFoundError:
            running = False
        if running:
            done.append(f"{SCHEDULE_ID}: already running")
        else:
            await ops.start_workflow(
                workflow_name_of(BillingExportSchedule.run), billing_from.isoformat(), id=SCHEDULE_ID
            )
            done.append(f"{SCHEDULE_ID}: started, exporting from {billing_from.isoformat()}")
    entities = await _entities(settings)
    await start_twins(settings, entities)
    done.append(f"entity twins: {len(entities)} (cells, namespaces, accounts, users)")
    return done


async def _entities(settings: Settings) -> list[tuple[Entity, str]]:
    async with ControlResources(settings) as resources:
        control, tenancy = resources.control, resources.tenancy
        entities: list[tuple[Entity, str]] = [("cell", c.name) for c in await control.list_cells()]
        entities += [
            ("namespace", n.name)
            for n in await control.list_namespaces()
            if n.name != settings.system_namespace
        ]
        for account in await tenancy.list_accounts():
            entities.append(("account", account.name))
            entities += [("user", f"{account.name}/{u.email}") for u in await tenancy.users_of(account.name)]
        return entities
