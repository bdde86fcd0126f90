"""``DeleteNamespace``: a namespace made unreachable at once (its vhost and broker user removed, its
record marked deleted, its twin and its schedules ended) and its data kept for its retention period,
then purged (runs, histories, the record). A namespace with open runs is not deleted: they are to be
cancelled or terminated first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from perdure.platform.control.control_app import control_app
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.control_steps import run_step
from perdure.platform.control.provisioning_activities import ProvisioningActivities
from perdure.platform.control.schedule_requests import open_schedule_runs
from perdure.platform.control.twin_change import TwinChange
from perdure.platform.control.twin_requests import send_change
from perdure.platform.control.workflow_ids import DELETE_NAMESPACE
from perdure.platform.stores.control_store import ControlError
from perdure.tenants import ActivityError, ApplicationError, RetryPolicy, workflow

STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


class DeletionActivities:
    """What deleting a namespace does, on the process's control-plane connections (its vhost and user
    go by provisioning's compensation, ``ProvisioningActivities.remove_infrastructure``)."""

    def __init__(self, resources: ControlResources) -> None:
        self.resources = resources

    @control_app.activity
    async def close_namespace(self, name: str) -> dict[str, Any]:
        """Refuse a namespace with open runs; else mark it deleted (once). Returns its cell, retention
        and when it was deleted."""
        control = self.resources.control
        try:
            record = await control.get_namespace(name)
        except ControlError as exc:
            raise ApplicationError(str(exc), type="UnknownNamespace", non_retryable=True) from None
        if name == self.resources.settings.system_namespace:
            raise ApplicationError("the system namespace is not deleted", type="Refused", non_retryable=True)
        if record.status == "moving":
            raise ApplicationError(
                f"namespace {name!r} is being moved to {record.moving_to!r}: delete it once it has moved",
                type="Moving",
                non_retryable=True,
            )
        if record.status != "deleted":
            still_open = await self.resources.runs(record.cell).count_open(name)
            if still_open:
                raise ApplicationError(
                    f"namespace {name!r} has {still_open} open runs: cancel or terminate them first",
                    type="OpenRuns",
                    non_retryable=True,
                )
            record = await control.update_namespace(name, status="deleted", deleted_at=datetime.now(UTC))
        assert record.deleted_at is not None
        return {
            "cell": record.cell,
            "retention_days": record.retention_days,
            "deleted_at": record.deleted_at.isoformat(),
        }

    @control_app.activity
    async def end_namespace_twin(self, name: str) -> None:
        await send_change(await self.resources.system_ops(), "namespace", name, TwinChange(kind="retire"))

    @control_app.activity
    async def end_namespace_schedules(self, name: str) -> int:
        """Terminate the namespace's schedules (workflows of the system namespace, which would otherwise
        go on trying to start runs in a namespace that is gone); returns how many."""
        ops = await self.resources.system_ops()
        ended = {run["workflow_id"] async for run in open_schedule_runs(ops, name)}
        for workflow_id in sorted(ended):
            await ops.terminate(workflow_id, f"namespace {name!r} deleted")
        return len(ended)

    @control_app.activity
    async def purge_namespace(self, name: str, cell: str) -> int:
        """The namespace's runs and histories, then its record; returns the runs purged."""
        purged = await self.resources.runs(cell).purge_namespace(name)
        await self.resources.control.delete_namespace(name)
        return purged


async def _step(activity: Any, *args: Any) -> Any:
    return await run_step(activity, *args, retry_policy=STEP_RETRY)


@control_app.workflow(name=DELETE_NAMESPACE)
class DeleteNamespace:
    @workflow.run
    async def run(self, name: str) -> dict[str, Any]:
        workflow.upsert_search_attributes({"Step": "closing"})
        try:
            closed: dict[str, Any] = await _step(DeletionActivities.close_namespace, name)
        except ActivityError as failure:  # refused (open runs, no such namespace): say why
            raise ApplicationError(
                str(failure.cause or failure), type="DeletionRefused", non_retryable=True
            ) from None
        await _step(ProvisioningActivities.remove_infrastructure, name, closed["cell"])
        await _step(DeletionActivities.end_namespace_twin, name)
        if workflow.patched("end-namespace-schedules"):  # deletions begun before this step was added
            await _step(DeletionActivities.end_namespace_schedules, name)
        purge_at = datetime.fromisoformat(closed["deleted_at"]) + timedelta(days=closed["retention_days"])
        workflow.upsert_search_attributes({"Step": "retained", "PurgeAt": purge_at.isoformat()})
        wait = purge_at - workflow.now()
        if wait > timedelta(0):
            await workflow.sleep(wait)
        workflow.upsert_search_attributes({"Step": "purging"})
        purged: int = await _step(DeletionActivities.purge_namespace, name, closed["cell"])
        workflow.upsert_search_attributes({"Step": "purged"})
        return {"namespace": name, "runs_purged": purged, "purged_at": workflow.now().isoformat()}
