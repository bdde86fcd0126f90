"""Asking for a namespace, and for its deletion. `perdure namespace create` asks the control plane:
``request_namespace`` starts ``ProvisionNamespace`` in the system namespace and follows its steps. Where
no control plane can run that workflow (the system namespace itself, test harnesses, benchmarks, the
demo), ``provision_namespace`` runs the same steps in this process. Either way the key is made here and
shown once; the steps get its hashes only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from types import MethodType
from typing import Any, TypeVar

from perdure.infra.settings import Settings
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.deletion import DeleteNamespace
from perdure.platform.control.namespace_move import MoveNamespace
from perdure.platform.control.provisioning import ProvisionedNamespace, connection_string, provision_vhost
from perdure.platform.control.provisioning_activities import NamespaceSpec, ProvisioningActivities
from perdure.platform.control.provisioning_workflow import (
    ProvisionNamespace,
    Step,
    StepFailed,
    provision_steps,
)
from perdure.platform.control.twin_change import TwinChange
from perdure.platform.control.twin_requests import control_plane_ready, signal_twin
from perdure.platform.control.workflow_ids import deletion_id, move_id, provisioning_id
from perdure.platform.core.definitions import workflow_name_of
from perdure.platform.core.start_rules import IdReusePolicy, fresh_run_id
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.stores.control_store import ControlError, ControlStore, Hosting, NamespaceRecord
from perdure.platform.tenancy.api_keys import IssuedKey, broker_password_hash, issue_key
from perdure.platform.tenancy.model import Quota
from perdure.tenants import ApplicationError
from perdure.tenants.client_errors import WorkflowNotFoundError

FOLLOW_EVERY = 0.25
T = TypeVar("T")
FOLLOW_TIMEOUT = 300.0


async def request_deletion(settings: Settings, name: str) -> str:
    """Start ``DeleteNamespace`` and wait until the namespace is closed (its purge waits for retention)."""
    workflow_id = deletion_id(name)

    def closed(described: dict[str, Any]) -> str | None:
        attributes = described["search_attributes"]
        if attributes.get("Step") not in ("retained", "purging", "purged"):
            return None
        return (
            f"namespace {name} deleted: unreachable now; its data is kept until "
            f"{attributes['PurgeAt']}, then purged by {workflow_id}"
        )

    return await _run_and_follow(
        settings,
        workflow_name_of(DeleteNamespace.run),
        name,
        workflow_id=workflow_id,
        busy=f"namespace {name!r} is being deleted already ({workflow_id})",
        until=closed,
    )


async def request_move(
    settings: Settings, name: str, target: str, on_step: Callable[[str], None] = lambda step: None
) -> dict[str, Any]:
    """Start ``MoveNamespace`` and follow it until the namespace is on ``target``; what it did."""
    shown: list[str] = []

    def moved(described: dict[str, Any]) -> dict[str, Any] | None:
        step = described["search_attributes"].get("Step", "")
        if step and step not in shown[-1:]:
            shown.append(step)
            on_step(step)
        result: dict[str, Any] | None = described["result"] if described["status"] == "completed" else None
        return result

    return await _run_and_follow(
        settings,
        workflow_name_of(MoveNamespace.run),
        {"name": name, "to": target},
        workflow_id=move_id(name),
        busy=f"namespace {name!r} is being moved by another request",
        until=moved,
        reuse="allow_duplicate",
    )


async def request_namespace(
    settings: Settings,
    name: str,
    app: str,
    *,
    cell: str | None = None,
    account: str | None = None,
    quota: Quota | None = None,
    retention_days: int = 30,
    hosting: Hosting = "platform",
    on_step: Callable[[str], None] = lambda step: None,
) -> ProvisionedNamespace:
    """Provision ``name`` through the control plane (idempotent: an existing namespace is returned
    with no key)."""
    async with ControlResources(settings) as resources:
        try:
            existing = await resources.control.get_namespace(name)
        except ControlError:
            existing = None
        try:
            await resources.control.get_namespace(settings.system_namespace)
        except ControlError:
            raise ControlError(
                "the control plane is not bootstrapped: run `perdure controlplane bootstrap --cell CELL`"
            ) from None
    if existing is not None and existing.status == "active":
        return ProvisionedNamespace(existing, None, None)
    key, spec = _new_spec(name, app, cell, account, quota, retention_days, hosting)
    shown: list[str] = []

    def active(described: dict[str, Any]) -> bool | None:
        step = described["search_attributes"].get("Step", "")
        if step and step not in shown[-1:]:
            shown.append(step)
            on_step(step)
        return True if described["status"] == "completed" else None

    await _run_and_follow(
        settings,
        workflow_name_of(ProvisionNamespace.run),
        spec.model_dump(mode="json"),
        workflow_id=provisioning_id(name),
        busy=f"namespace {name!r} is being provisioned by another request",
        until=active,
    )
    async with ControlResources(settings) as resources:
        record = await resources.control.get_namespace(name)
    return ProvisionedNamespace(record, key.secret, connection_string(settings, record, key.secret))


async def provision_namespace(
    settings: Settings,
    name: str,
    app: str,
    *,
    cell: str | None = None,
    account: str | None = None,
    quota: Quota | None = None,
    retention_days: int = 30,
    hosting: Hosting = "platform",
) -> ProvisionedNamespace:
    """Provision ``name`` in this process, by ``ProvisionNamespace``'s steps without the canary and the
    twin, which need the namespace's cell and the control plane running (bootstrapping starts the twins
    of what exists). Idempotent: an existing namespace of the same owner and app is returned with no
    key (its vhost made again if it went); one of another is refused."""
    async with ControlResources(settings) as resources:
        try:
            existing: NamespaceRecord | None = await resources.control.get_namespace(name)
        except ControlError:
            existing = None
        if existing is not None:
            if (existing.app, existing.account) != (app, account) or (cell and cell != existing.cell):
                raise ControlError(
                    f"namespace {name!r} exists (account {existing.account!r}, cell {existing.cell!r}, "
                    f"app {existing.app!r})"
                )
            await provision_vhost(resources, existing.cell, existing.vhost)
            return ProvisionedNamespace(existing, None, None)
        key, spec = _new_spec(name, app, cell, account, quota, retention_days, hosting)
        try:
            await provision_steps(spec, _InThisProcess(ProvisioningActivities(resources)), validate=False)
        except ApplicationError as failed:  # as `perdure namespace create` tells a failure
            raise ControlError(str(failed)) from None
        record = await resources.control.get_namespace(name)
    return ProvisionedNamespace(record, key.secret, connection_string(settings, record, key.secret))


async def create_namespace(
    settings: Settings, name: str, app: str, cell: str, quota: Quota | None = None
) -> NamespaceRecord:
    """A namespace for ops (no account), in this process; see ``provision_namespace``."""
    return (await provision_namespace(settings, name, app, cell=cell, quota=quota)).record


class _InThisProcess:
    """Runs each step as a call of its method on ``activities``: at once, no retries."""

    def __init__(self, activities: ProvisioningActivities) -> None:
        self.activities = activities

    def enter(self, step: str) -> None:
        pass

    async def call(self, step: Step, *args: Any) -> Any:
        try:
            return await MethodType(step, self.activities)(*args)
        except Exception as exc:
            raise StepFailed(exc, exc) from exc


def _new_spec(
    name: str,
    app: str,
    cell: str | None,
    account: str | None,
    quota: Quota | None,
    retention_days: int,
    hosting: Hosting,
) -> tuple[IssuedKey, NamespaceSpec]:
    """A new key, and the request for the namespace with the key's hashes only."""
    key = issue_key()
    return key, NamespaceSpec(
        name=name,
        app=app,
        account=account,
        cell=cell,
        quota=quota or Quota(),
        retention_days=retention_days,
        hosting=hosting,
        api_key_id=key.key_id,
        api_key_hash=key.hash,
        broker_password_hash=broker_password_hash(key.secret),
    )


async def _run_and_follow(
    settings: Settings,
    workflow_type: str,
    argument: Any,
    *,
    workflow_id: str,
    busy: str,
    until: Callable[[dict[str, Any]], T | None],
    reuse: IdReusePolicy = "allow_duplicate_failed_only",
) -> T:
    """Start a control-plane workflow and follow its run until ``until`` says what it waited for.
    A run that ends without that raises its failure; another open run of the id raises ``busy``."""
    request_id = str(uuid.uuid4())
    run_id = fresh_run_id(settings.system_namespace, workflow_id, request_id)
    async with await OpsClient.connect(settings, settings.system_namespace) as ops:
        await ops.start_workflow(
            workflow_type,
            argument,
            id=workflow_id,
            request_id=request_id,
            id_reuse_policy=reuse,
        )
        async with asyncio.timeout(FOLLOW_TIMEOUT):
            while True:
                try:
                    described = await ops.describe(workflow_id)
                except WorkflowNotFoundError:
                    described = None  # ours is on its way in
                if described is not None:
                    is_open = described["status"] in ("running", "blocked")
                    if described["run_id"] == run_id:
                        outcome = until(described)
                        if outcome is not None:
                            return outcome
                        if not is_open:
                            failure = described.get("failure") or {}
                            raise ControlError(
                                failure.get("message") or f"{workflow_id} ended {described['status']}"
                            )
                    elif is_open:
                        raise ControlError(busy)
                await asyncio.sleep(FOLLOW_EVERY)


async def request_quota_change(
    settings: Settings, control: ControlStore, name: str, given: dict[str, Any], retention_days: int | None
) -> NamespaceRecord | None:
    """Change the quota fields ``given`` of a namespace (and its retention): through its twin once the
    control plane is bootstrapped (None: sent, applied within seconds; admission and executors pick it
    up), else directly (the changed record). An invalid value is refused before anything is sent."""
    current = await control.get_namespace(name)
    quota = Quota.model_validate({**current.quota.model_dump(), **given})
    fields: dict[str, Any] = {"quota": quota}
    if retention_days is not None:
        fields["retention_days"] = retention_days
    if not await control_plane_ready(settings):
        return await control.update_namespace(name, **fields)
    await signal_twin(
        settings, "namespace", name, TwinChange(kind="update", fields={**fields, "quota": given})
    )
    return None
