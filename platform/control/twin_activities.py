"""What the entity twins do to the world: read an entity's record, and apply a change to it in the
control store (which admission, placement and the cells read). Idempotent: a change applied twice
leaves the same record."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from perdure.platform.control.control_app import control_app
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.twin_change import TwinChange
from perdure.platform.control.workflow_ids import DELETE_NAMESPACE, Entity, deletion_id
from perdure.platform.stores.control_store import ControlError
from perdure.platform.tenancy.model import Quota
from perdure.tenants import ApplicationError


class TwinActivities:
    """What the twins do, on the process's control-plane connections."""

    def __init__(self, resources: ControlResources) -> None:
        self.resources = resources

    @control_app.activity
    async def read_entity(self, entity: Entity, key: str) -> dict[str, Any]:
        try:
            return await self._read(entity, key)
        except ControlError as exc:
            raise ApplicationError(str(exc), type="UnknownEntity", non_retryable=True) from None

    @control_app.activity
    async def start_namespace_deletion(self, name: str) -> None:
        """Start ``DeleteNamespace`` (once: a deletion already under way is left to run)."""
        ops = await self.resources.system_ops()
        await ops.start_workflow(
            DELETE_NAMESPACE, name, id=deletion_id(name), id_reuse_policy="allow_duplicate_failed_only"
        )

    @control_app.activity
    async def apply_change(self, entity: Entity, key: str, change: TwinChange) -> dict[str, Any]:
        """Apply ``change``; returns the entity as it is now. A change that cannot apply (a bad value, an
        unknown entity) fails for good with the reason."""
        try:
            await self._apply(entity, key, change)
            return await self._read(entity, key)
        except (ControlError, ValidationError, ValueError) as exc:
            raise ApplicationError(str(exc), type="ChangeRefused", non_retryable=True) from None

    async def _read(self, entity: Entity, key: str) -> dict[str, Any]:
        control, tenancy = self.resources.control, self.resources.tenancy
        match entity:
            case "cell":
                return (await control.get_cell(key)).model_dump(mode="json")
            case "namespace":
                return (await control.get_namespace(key)).model_dump(mode="json", exclude={"api_key_hash"})
            case "account":
                return (await tenancy.get_account(key)).model_dump(mode="json")
            case "user":
                account, _, email = key.partition("/")
                for user in await tenancy.users_of(account):
                    if user.email.lower() == email.lower():
                        return user.model_dump(mode="json")
                raise ControlError(f"no user {email!r} in account {account!r}")

    async def _apply(self, entity: Entity, key: str, change: TwinChange) -> None:
        control = self.resources.control
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
            case "namespace", "suspend" | "resume":
                # A namespace being moved keeps its status for the move's end: the status it goes back
                # to changes instead (so that a suspension during a move does not undo the move's hold).
                wanted = "suspended" if change.kind == "suspend" else "active"
                current = await control.get_namespace(key)
                if current.status == "moving":
                    if (
                        await control.update_namespace_if(
                            key, {"status": "moving"}, status_before_move=wanted
                        )
                        is None
                    ):
                        raise ControlError(f"namespace {key!r} changed during its move; try again")
                elif change.kind == "suspend" or current.status == "suspended":
                    await control.update_namespace(key, status=wanted)
            case "cell", "update":
                if set(change.fields) - {"capacity", "healthy"}:
                    raise ValueError(
                        f"a cell's twin changes capacity and health, not {sorted(change.fields)}"
                    )
                await control.update_cell(key, **change.fields)
            case "user", "update":
                account, _, email = key.partition("/")
                await self.resources.tenancy.add_user(email, account, change.fields["role"])
            case _:
                raise ValueError(f"a {entity} twin does not take {change.kind!r}")
