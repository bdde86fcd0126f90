"""Provisioning a namespace as a saga: ``provision_steps`` runs the steps (the methods of
``ProvisioningActivities``) in their order; a step that fails for good undoes the steps before it, in
reverse, and provisioning fails with the reason, leaving nothing half-made.

``ProvisionNamespace`` runs them as its activities, with retries (what `perdure namespace create`
starts); its progress is its ``Step`` search attribute (and the ``step`` query). Where no control plane
can run the workflow (the system namespace itself, test harnesses, benchmarks), the same function runs
the same steps as calls in the process (``namespace_requests.provision_namespace``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

from perdure.platform.control.control_app import control_app
from perdure.platform.control.provisioning_activities import NamespaceSpec, ProvisioningActivities
from perdure.platform.control.workflow_ids import PROVISION_NAMESPACE
from perdure.tenants import ActivityError, ApplicationError, RetryPolicy, workflow

STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5
)
Step = Callable[..., Awaitable[Any]]


class StepFailed(Exception):
    """A step failed for good: ``error`` is what its runner met, ``reason`` what it is told as."""

    def __init__(self, error: BaseException, reason: BaseException) -> None:
        super().__init__(str(reason))
        self.error = error
        self.reason = reason


class StepRunner(Protocol):
    """How provisioning's steps run: as a workflow's activities, or as calls in this process."""

    def enter(self, step: str) -> None: ...

    async def call(self, step: Step, *args: Any) -> Any:
        """The step's result; raises ``StepFailed`` if it failed for good."""
        ...


async def provision_steps(spec: NamespaceSpec, runner: StepRunner, *, validate: bool) -> dict[str, str]:
    """Provision ``spec``'s namespace. ``validate``: run the canary through it and start its twin,
    which need its cell and the control plane running."""
    steps = ProvisioningActivities
    current = "starting"

    def enter(step: str) -> None:
        nonlocal current
        current = step
        runner.enter(step)

    undo: list[tuple[Step, tuple[Any, ...]]] = []
    canary = ""
    try:
        enter("placing")
        cell: str = await runner.call(steps.place_namespace, spec)
        enter("recording")
        await runner.call(steps.record_namespace, spec, cell)
        undo.append((steps.remove_record, (spec.name, spec.api_key_id)))
        enter("infrastructure")
        # Undone even if it failed half-way: removing what is not there is a no-op.
        undo.append((steps.remove_infrastructure, (spec.name, cell)))
        await runner.call(steps.provision_infrastructure, spec.name, spec.broker_password_hash)
        if validate:
            enter("canary")
            canary = await runner.call(steps.run_canary, spec.name)
        enter("activating")
        await runner.call(steps.activate_namespace, spec.name)
        if validate:
            await runner.call(steps.start_namespace_twin, spec.name)
    except StepFailed as failed:
        failed_at = current
        enter("compensating")
        for compensation, args in reversed(undo):
            try:
                await runner.call(compensation, *args)
            except StepFailed as not_undone:
                raise not_undone.error  # noqa: B904 (what the runner met, with its own cause)
        enter("failed")
        raise ApplicationError(
            f"provisioning {spec.name!r} failed at {failed_at}: {failed.reason}; what was made is undone",
            type="ProvisioningFailed",
            non_retryable=True,
        ) from None
    enter("active")
    return {"namespace": spec.name, "cell": cell, "canary": canary}


@control_app.workflow(name=PROVISION_NAMESPACE)
class ProvisionNamespace:
    def __init__(self) -> None:
        self.current = "starting"

    @workflow.run
    async def run(self, spec: NamespaceSpec) -> dict[str, str]:
        return await provision_steps(spec, self, validate=True)

    def enter(self, step: str) -> None:
        self.current = step
        workflow.upsert_search_attributes({"Step": step})

    async def call(self, step: Step, *args: Any) -> Any:
        try:
            return await workflow.execute_activity(
                step, *args, start_to_close_timeout=timedelta(minutes=2), retry_policy=STEP_RETRY
            )
        except ActivityError as failure:
            raise StepFailed(failure, failure.cause or failure) from None

    @workflow.query
    def step(self) -> str:
        return self.current
