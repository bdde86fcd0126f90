"""Provisioning's one path: the steps ``ProvisionNamespace`` runs as activities are the steps the direct
path (the system namespace, test harnesses, benchmarks) runs in its process, in the same order, and a
failed step is undone the same way. The steps here are the test's own (same names as the platform's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from perdure.platform.control.provisioning_activities import NamespaceSpec
from perdure.platform.control.provisioning_workflow import (
    ProvisionNamespace,
    Step,
    StepFailed,
    provision_steps,
)
from perdure.platform.core import history as h
from perdure.tenants import App, ApplicationError, WorkflowFailureError
from perdure.tenants.testing import LocalEnvironment

SPEC = NamespaceSpec(
    name="shop", app="shop.app:app", api_key_id="k1", api_key_hash="h1", broker_password_hash="b1"
)
calls: list[str] = []
failing: set[str] = set()


def _step(name: str, result: Any = None) -> Any:
    calls.append(name)
    if name in failing:
        raise ApplicationError(f"{name} broke", type="Broken", non_retryable=True)
    return result


app = App("provisioning-steps")
app.workflow(ProvisionNamespace)


@app.activity(name="place_namespace")
def place(spec: NamespaceSpec) -> str:
    return str(_step("place_namespace", "cell-1"))


@app.activity(name="record_namespace")
def record(spec: NamespaceSpec, cell: str) -> None:
    _step("record_namespace")


@app.activity(name="provision_infrastructure")
def infrastructure(name: str, broker_password_hash: str) -> None:
    _step("provision_infrastructure")


@app.activity(name="run_canary")
def canary(name: str) -> str:
    return str(_step("run_canary", "canary-1"))


@app.activity(name="activate_namespace")
def activate(name: str) -> None:
    _step("activate_namespace")


@app.activity(name="start_namespace_twin")
def twin(name: str) -> None:
    _step("start_namespace_twin")


@app.activity(name="remove_infrastructure")
def remove_infrastructure(name: str, cell: str) -> None:
    _step("remove_infrastructure")


@app.activity(name="remove_record")
def remove_record(name: str, api_key_id: str) -> None:
    _step("remove_record")


class InThisProcess:
    """The direct path's runner, on the test's steps (looked up by the platform step's name)."""

    def __init__(self) -> None:
        self.entered: list[str] = []

    def enter(self, step: str) -> None:
        self.entered.append(step)

    async def call(self, step: Step, *args: Any) -> Any:
        try:
            return app.activities[step.__name__].fn(*args)
        except Exception as exc:
            raise StepFailed(exc, exc) from exc


@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    calls.clear()
    failing.clear()
    async with LocalEnvironment(app) as environment:
        yield environment


def scheduled(env: LocalEnvironment, workflow_id: str) -> list[str]:
    events = h.history_from_json(env.history(workflow_id))
    return [e.activity_type for e in events if isinstance(e, h.ActivityTaskScheduled)]


async def test_the_workflow_and_the_direct_path_run_the_same_steps_in_the_same_order(
    env: LocalEnvironment,
) -> None:
    result = await env.execute_workflow(ProvisionNamespace.run, SPEC, id="p")
    assert result == {"namespace": "shop", "cell": "cell-1", "canary": "canary-1"}
    as_workflow = scheduled(env, "p")
    assert as_workflow == [
        "place_namespace",
        "record_namespace",
        "provision_infrastructure",
        "run_canary",
        "activate_namespace",
        "start_namespace_twin",
    ]
    assert await env.get_workflow_handle("p").query(ProvisionNamespace.step) == "active"
    calls.clear()
    runner = InThisProcess()
    assert await provision_steps(SPEC, runner, validate=True) == result
    assert calls == as_workflow
    # Without a running cell and control plane, the direct path leaves out the canary and the twin.
    calls.clear()
    assert (await provision_steps(SPEC, InThisProcess(), validate=False))["canary"] == ""
    assert calls == [s for s in as_workflow if s not in ("run_canary", "start_namespace_twin")]
    assert runner.entered == [
        "placing",
        "recording",
        "infrastructure",
        "canary",
        "activating",
        "active",
    ]


async def test_a_failed_step_is_undone_the_same_way_on_both_paths(env: LocalEnvironment) -> None:
    failing.add("provision_infrastructure")
    with pytest.raises(WorkflowFailureError) as failure:
        await env.execute_workflow(ProvisionNamespace.run, SPEC, id="p")
    told = str(failure.value.cause)
    assert "provisioning 'shop' failed at infrastructure: provision_infrastructure broke" in told
    assert "what was made is undone" in told
    as_workflow = scheduled(env, "p")
    assert as_workflow[-2:] == ["remove_infrastructure", "remove_record"]  # in reverse
    calls.clear()
    with pytest.raises(ApplicationError) as direct:
        await provision_steps(SPEC, InThisProcess(), validate=False)
    assert str(direct.value) == told and direct.value.type == "ProvisioningFailed"
    assert calls == as_workflow


async def test_a_step_that_is_not_undone_fails_with_its_own_error(env: LocalEnvironment) -> None:
    failing.update({"activate_namespace", "remove_record"})
    with pytest.raises(ApplicationError, match="remove_record broke"):
        await provision_steps(SPEC, InThisProcess(), validate=False)
    assert calls[-3:] == ["activate_namespace", "remove_infrastructure", "remove_record"]
