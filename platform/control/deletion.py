"""``DeleteNamespace``: a namespace made unreachable at once (its vhost and broker user removed, its
record marked deleted, its twin ended) and its data kept for its retention period, then purged (runs,
histories, the record). A namespace with open runs is not deleted: they are to be cancelled or
terminated first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from perdure.infra.settings import get_settings
from perdure.platform.control.control_app import control_app
from perdure.platform.control.provisioning_activities import remove_infrastructure
from perdure.platform.control.twin_change import TwinChange
from perdure.platform.control.twin_requests import signal_twin
from perdure.platform.control.workflow_ids import DELETE_NAMESPACE
from perdure.platform.stores.control_store import ControlError
from perdure.platform.stores.databases import Databases
from perdure.tenants import ActivityError, ApplicationError, RetryPolicy, workflow

STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@control_app.activity
async def close_namespace(name: str) -> dict[str, Any]:
    """Refuse a namespace with open runs; else mark it deleted (once). Returns its cell, retention and
    when it was deleted."""
    settings = get_settings()
    databases = Databases.connect(settings)
    try:
        try:
            record = await databases.control.get_namespace(name)
        except ControlError as exc:
            raise ApplicationError(str(exc), type="UnknownNamespace", non_retryable=True) from None
        if name == settings.system_namespace:
            raise ApplicationError("the system namespace is not deleted", type="Refused", non_retryable=True)
        if record.status != "deleted":
            cell_databases = Databases.connect(settings, record.cell)
            try:
                still_open = await cell_databases.runs(settings, record.cell).count_open(name)
            finally:
                await cell_databases.close()
            if still_open:
                raise ApplicationError(
                    f"namespace {name!r} has {still_open} open runs: cancel or terminate them first",
                    type="OpenRuns",
                    non_retryable=True,
                )
            record = await databases.control.update_namespace(
                name, status="deleted", deleted_at=datetime.now(UTC)
            )
        assert record.deleted_at is not None
        return {
            "cell": record.cell,
            "retention_days": record.retention_days,
            "deleted_at": record.deleted_at.isoformat(),
        }
    finally:
        await databases.close()


@control_app.activity
async def end_namespace_twin(name: str) -> None:
    await signal_twin(get_settings(), "namespace", name, TwinChange(kind="retire"))


@control_app.activity
async def purge_namespace(name: str, cell: str) -> int:
    """The namespace's runs and histories, then its record; returns the runs purged."""
    settings = get_settings()
    cell_databases = Databases.connect(settings, cell)
    try:
        purged = await cell_databases.runs(settings, cell).purge_namespace(name)
    finally:
        await cell_databases.close()
    databases = Databases.connect(settings)
    try:
        await databases.control.delete_namespace(name)
    finally:
        await databases.close()
    return purged


async def _step(activity: Any, *args: Any) -> Any:
    return await workflow.execute_activity(
        activity, *args, start_to_close_timeout=timedelta(minutes=5), retry_policy=STEP_RETRY
    )


@control_app.workflow(name=DELETE_NAMESPACE)
class DeleteNamespace:
    @workflow.run
    async def run(self, name: str) -> dict[str, Any]:
        workflow.upsert_search_attributes({"Step": "closing"})
        try:
            closed: dict[str, Any] = await _step(close_namespace, name)
        except ActivityError as failure:  # refused (open runs, no such namespace): say why
            raise ApplicationError(
                str(failure.cause or failure), type="DeletionRefused", non_retryable=True
            ) from None
        await _step(remove_infrastructure, name, closed["cell"])
        await _step(end_namespace_twin, name)
        purge_at = datetime.fromisoformat(closed["deleted_at"]) + timedelta(days=closed["retention_days"])
        workflow.upsert_search_attributes({"Step": "retained", "PurgeAt": purge_at.isoformat()})
        wait = purge_at - workflow.now()
        if wait > timedelta(0):
            await workflow.sleep(wait)
        workflow.upsert_search_attributes({"Step": "purging"})
        purged: int = await _step(purge_namespace, name, closed["cell"])
        workflow.upsert_search_attributes({"Step": "purged"})
        return {"namespace": name, "runs_purged": purged, "purged_at": workflow.now().isoformat()}
