"""Asking the control plane for a namespace: `perdure namespace create` starts ``ProvisionNamespace``
in the system namespace and follows its steps. The key is made here and shown once; the workflow gets
its hashes only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from perdure.infra.settings import Settings
from perdure.platform.cell.connections import Databases
from perdure.platform.cell.control_store import ControlError
from perdure.platform.cell.engine import fresh_run_id
from perdure.platform.cell.ops_client import OpsClient, WorkflowNotFound
from perdure.platform.cell.provisioning import ProvisionedNamespace, connection_string
from perdure.platform.control.deletion import DeleteNamespace, deletion_id
from perdure.platform.control.provisioning_activities import NamespaceSpec
from perdure.platform.control.provisioning_workflow import ProvisionNamespace, provisioning_id
from perdure.platform.core.definitions import workflow_name_of
from perdure.platform.tenancy.api_keys import broker_password_hash, issue_key
from perdure.platform.tenancy.model import Quota

FOLLOW_EVERY = 0.25
PROVISIONING_TIMEOUT = 300.0


async def request_deletion(settings: Settings, name: str) -> str:
    """Start ``DeleteNamespace`` and wait until the namespace is closed (its purge waits for retention)."""
    request_id = str(uuid.uuid4())
    workflow_id = deletion_id(name)
    run_id = fresh_run_id(settings.system_namespace, workflow_id, request_id)
    async with await OpsClient.connect(settings, settings.system_namespace) as ops:
        await ops.start_workflow(
            workflow_name_of(DeleteNamespace.run),
            name,
            id=workflow_id,
            request_id=request_id,
            id_reuse_policy="allow_duplicate_failed_only",
        )
        async with asyncio.timeout(PROVISIONING_TIMEOUT):
            while True:
                try:
                    described = await ops.describe(workflow_id)
                except WorkflowNotFound:
                    described = None
                if described is not None and described["run_id"] == run_id:
                    attributes = described["search_attributes"]
                    if attributes.get("Step") in ("retained", "purging", "purged"):
                        return (
                            f"namespace {name} deleted: unreachable now; its data is kept until "
                            f"{attributes['PurgeAt']}, then purged by {workflow_id}"
                        )
                    if described["status"] not in ("running", "blocked"):
                        failure = described.get("failure") or {}
                        raise ControlError(failure.get("message") or f"deletion ended {described['status']}")
                elif described is not None and described["status"] not in ("running", "blocked"):
                    pass  # an earlier deletion's run; ours is on its way in
                elif described is not None:
                    raise ControlError(f"namespace {name!r} is being deleted already ({workflow_id})")
                await asyncio.sleep(FOLLOW_EVERY)


async def request_namespace(
    settings: Settings,
    name: str,
    app: str,
    *,
    cell: str | None = None,
    account: str | None = None,
    quota: Quota | None = None,
    retention_days: int = 30,
    on_step: Callable[[str], None] = lambda step: None,
) -> ProvisionedNamespace:
    """Provision ``name`` through the control plane (idempotent: an existing namespace is returned
    with no key)."""
    databases = Databases.connect(settings)
    try:
        try:
            existing = await databases.control.get_namespace(name)
        except ControlError:
            existing = None
        try:
            await databases.control.get_namespace(settings.system_namespace)
        except ControlError:
            raise ControlError(
                "the control plane is not bootstrapped: run `perdure controlplane bootstrap --cell CELL`"
            ) from None
    finally:
        await databases.close()
    if existing is not None and existing.status == "active":
        return ProvisionedNamespace(existing, None, None)
    key = issue_key()
    spec = NamespaceSpec(
        name=name,
        app=app,
        account=account,
        cell=cell,
        quota=quota or Quota(),
        retention_days=retention_days,
        api_key_id=key.key_id,
        api_key_hash=key.hash,
        broker_password_hash=broker_password_hash(key.secret),
    )
    workflow_id = provisioning_id(name)
    request_id = str(uuid.uuid4())
    run_id = fresh_run_id(settings.system_namespace, workflow_id, request_id)
    async with await OpsClient.connect(settings, settings.system_namespace) as ops:
        await ops.start_workflow(
            workflow_name_of(ProvisionNamespace.run),
            spec.model_dump(mode="json"),
            id=workflow_id,
            request_id=request_id,
            id_reuse_policy="allow_duplicate_failed_only",
        )
        shown = ""
        async with asyncio.timeout(PROVISIONING_TIMEOUT):
            while True:
                try:
                    described = await ops.describe(workflow_id)
                except WorkflowNotFound:
                    described = None
                if (
                    described is not None
                    and described["run_id"] != run_id
                    and described["status"]
                    in (
                        "running",
                        "blocked",
                    )
                ):
                    raise ControlError(f"namespace {name!r} is being provisioned by another request")
                if described is not None and described["run_id"] == run_id:
                    step = described["search_attributes"].get("Step", "")
                    if step and step != shown:
                        shown = step
                        on_step(step)
                    if described["status"] == "completed":
                        break
                    if described["status"] not in ("running", "blocked"):
                        failure = described.get("failure") or {}
                        raise ControlError(
                            failure.get("message") or f"provisioning ended {described['status']}"
                        )
                await asyncio.sleep(FOLLOW_EVERY)
    databases = Databases.connect(settings)
    try:
        record = await databases.control.get_namespace(name)
    finally:
        await databases.close()
    return ProvisionedNamespace(record, key.secret, connection_string(settings, record, key.secret))
