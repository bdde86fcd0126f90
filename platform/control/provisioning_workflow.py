"""``ProvisionNamespace``: a namespace made step by step, as a saga. Each step is an idempotent activity
with retries; a step that fails for good undoes the steps before it, in reverse, and the workflow
fails with the reason, leaving nothing half-made. Its progress is its ``Step`` search attribute (and
the ``step`` query)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from perdure.platform.control.control_app import control_app
from perdure.platform.control.provisioning_activities import (
    NamespaceSpec,
    activate_namespace,
    place_namespace,
    provision_infrastructure,
    record_namespace,
    remove_infrastructure,
    remove_record,
    run_canary,
    start_namespace_twin,
)
from perdure.platform.control.workflow_ids import PROVISION_NAMESPACE
from perdure.tenants import ActivityError, ApplicationError, RetryPolicy, workflow

STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5
)
STEPS = ("placing", "recording", "infrastructure", "canary", "activating")


async def _step(activity: Callable[..., Any], *args: Any) -> Any:
    return await workflow.execute_activity(
        activity, *args, start_to_close_timeout=timedelta(minutes=2), retry_policy=STEP_RETRY
    )


@control_app.workflow(name=PROVISION_NAMESPACE)
class ProvisionNamespace:
    def __init__(self) -> None:
        self.current = "starting"

    @workflow.run
    async def run(self, spec: NamespaceSpec) -> dict[str, str]:
        undo: list[Callable[[], Awaitable[Any]]] = []
        try:
            self._enter("placing")
            cell: str = await _step(place_namespace, spec)
            self._enter("recording")
            await _step(record_namespace, spec, cell)
            undo.append(lambda: _step(remove_record, spec.name, spec.api_key_id))
            self._enter("infrastructure")
            # Undone even if it failed half-way: removing what is not there is a no-op.
            undo.append(lambda: _step(remove_infrastructure, spec.name, cell))
            await _step(provision_infrastructure, spec.name, spec.broker_password_hash)
            self._enter("canary")
            canary = await _step(run_canary, spec.name)
            self._enter("activating")
            await _step(activate_namespace, spec.name)
            await _step(start_namespace_twin, spec.name)
        except ActivityError as failure:
            failed_at = self.current
            self._enter("compensating")
            for compensation in reversed(undo):
                await compensation()
            self._enter("failed")
            cause = failure.cause or failure
            raise ApplicationError(
                f"provisioning {spec.name!r} failed at {failed_at}: {cause}; what was made is undone",
                type="ProvisioningFailed",
                non_retryable=True,
            ) from None
        self._enter("active")
        return {"namespace": spec.name, "cell": cell, "canary": canary}

    def _enter(self, step: str) -> None:
        self.current = step
        workflow.upsert_search_attributes({"Step": step})

    @workflow.query
    def step(self) -> str:
        return self.current
