"""What the entity twins do to the world: read an entity's record, and apply a change to it in the
control store (which admission, placement and the cells read). Idempotent: a change applied twice
leaves the same record."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from perdure.infra.settings import get_settings
from perdure.platform.control.control_app import control_app
from perdure.platform.control.twin_change import TwinChange
from perdure.platform.control.workflow_ids import DELETE_NAMESPACE, Entity, deletion_id
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.stores.control_store import ControlError
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.model import Quota
from perdure.tenants import ApplicationError


async def _read(databases: Databases, entity: Entity, key: str) -> dict[str, Any]:
    match entity:
        case "cell":
            return (await databases.control.get_cell(key)).model_dump(mode="json")
        case "namespace":
            return (await databases.control.get_namespace(key)).model_dump(
                mode="json", exclude={"api_key_hash"}
            )
        case "account":
            return (await TenancyStore(databases.control_db).get_account(key)).model_dump(mode="json")
        case "user":
            account, _, email = key.partition("/")
            for user in await TenancyStore(databases.control_db).users_of(account):
                if user.email.lower() == email.lower():
                    return user.model_dump(mode="json")
            raise ControlError(f"no user {email!r} in account {account!r}")


@control_app.activity
async def read_entity(entity: Entity, key: str) -> dict[str, Any]:
    databases = Databases.connect(get_settings())
    try:
        try:
            return await _read(databases, entity, key)
        except ControlError as exc:
            raise ApplicationError(str(exc), type="UnknownEntity", non_retryable=True) from None
    finally:
        await databases.close()


@control_app.activity
async def start_namespace_deletion(name: str) -> None:
    """Start ``DeleteNamespace`` (once: a deletion already under way is left to run)."""
    settings = get_settings()
    async with await OpsClient.connect(settings, settings.system_namespace) as ops:
        await ops.start_workflow(
            DELETE_NAMESPACE,
            name,
            id=deletion_id(name),
            id_reuse_policy="allow_duplicate_failed_only",
        )


@control_app.activity
async def apply_change(entity: Entity, key: str, change: TwinChange) -> dict[str, Any]:
    """Apply ``change``; returns the entity as it is now. A change that cannot apply (a bad value, an
    unknown entity) fails for good with the reason."""
    databases = Databases.connect(get_settings())
    try:
        try:
            await _apply(databases, entity, key, change)
            return await _read(databases, entity, key)
        except (ControlError, ValidationError, ValueError) as exc:
            raise ApplicationError(str(exc), type="ChangeRefused", non_retryable=True) from None
    finally:
        await databases.close()


async def _apply(databases: Databases, entity: Entity, key: str, change: TwinChange) -> None:
    control = databases.control
    match entity, change.kind:
        case "namespace", "update":
            current = await control.get_namespace(key)
            fields = dict(change.fields)
            quota = Quota.model_validate({**current.quota.model_dump(), **fields.pop("quota", {})})
            allowed = {"retention_days"}
            if set(fields) - allowed:
                raise ValueError(
                    f"a namespace's twin changes quota and {sorted(allowed)}, not {sorted(fields)}"
                )
            await control.update_namespace(key, quota=quota, **fields)
        case "namespace", "suspend":
            await control.update_namespace(key, status="suspended")
        case "namespace", "resume":
            current = await control.get_namespace(key)
            if current.status == "suspended":
                await control.update_namespace(key, status="active")
        case "cell", "update":
            if set(change.fields) - {"capacity", "healthy"}:
                raise ValueError(f"a cell's twin changes capacity and health, not {sorted(change.fields)}")
            await control.update_cell(key, **change.fields)
        case "user", "update":
            account, _, email = key.partition("/")
            await TenancyStore(databases.control_db).add_user(email, account, change.fields["role"])
        case _:
            raise ValueError(f"a {entity} twin does not take {change.kind!r}")
