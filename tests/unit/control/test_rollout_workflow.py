"""The rollout's decisions, in LocalEnvironment with virtual time: the cells are a dictionary here, and
the activities that read and set them are the test's own (same names as the platform's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from perdure.platform.control.rollout_activities import RingHealth
from perdure.platform.control.rollout_workflow import Ring, Rollout, RolloutSpec
from perdure.tenants import App
from perdure.tenants.testing import LocalEnvironment

app = App("rollout-tests")
app.workflow(Rollout)
desired: dict[str, str | None] = {}
running: dict[str, str] = {}  # the version each cell's processes run (what they would report)
broken: set[str] = set()  # cells whose processes never take a version
sick_after_bake: set[str] = set()  # cells that run the version, then fail the gate
restored: list[dict[str, str | None]] = []
checks: dict[str, int] = {}


@app.activity(name="set_desired_versions")
def set_desired(cells: list[str], version: str | None) -> dict[str, str | None]:
    previous = {cell: desired.get(cell) for cell in cells}
    for cell in cells:
        desired[cell] = version
        if cell not in broken and version is not None:
            running[cell] = version
    return previous


@app.activity(name="restore_desired_versions")
def restore(previous: dict[str, str | None]) -> None:
    restored.append(previous)
    desired.update(previous)


@app.activity(name="ring_health")
def health(cells: list[str], version: str, max_error_rate: float, max_lag: int) -> RingHealth:
    converged = all(running.get(cell) == version for cell in cells)
    for cell in cells:
        checks[cell] = checks.get(cell, 0) + 1
    # Healthy when first seen on the version; sick by the gate, after the bake.
    sick = [cell for cell in cells if cell in sick_after_bake and checks[cell] > 1]
    return RingHealth(
        converged=converged, healthy=converged and not sick, detail=f"sick: {sick}" if sick else "ok"
    )


@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    for state in (desired, running, broken, sick_after_bake, restored, checks):
        state.clear()
    async with LocalEnvironment(app) as environment:
        yield environment


def spec(**changes: Any) -> RolloutSpec:
    rings = [
        Ring(name="canary", cells=["c1"]),
        Ring(name="main", cells=["c2", "c3"]),
        Ring(name="last", cells=["c4"]),
    ]
    return RolloutSpec(
        version="v2", rings=rings, **{"bake_seconds": 30, "ready_timeout_seconds": 60, **changes}
    )


async def test_every_ring_in_turn_when_all_is_well(env: LocalEnvironment) -> None:
    result = await env.execute_workflow(Rollout.run, spec(), id="r")
    assert result["phase"] == "completed" and result["rings_done"] == ["canary", "main", "last"]
    assert desired == {"c1": "v2", "c2": "v2", "c3": "v2", "c4": "v2"} and restored == []


async def test_a_ring_that_never_runs_the_version_is_rolled_back_and_the_rollout_halts(
    env: LocalEnvironment,
) -> None:
    desired.update({"c1": "v1", "c2": "v1", "c3": "v1", "c4": "v1"})
    broken.add("c3")
    result = await env.execute_workflow(Rollout.run, spec(), id="r")
    assert result["phase"] == "halted" and result["ring"] == "main" and result["rings_done"] == ["canary"]
    assert "not ready after 60 s" in result["detail"]
    assert restored == [{"c2": "v1", "c3": "v1"}]
    assert desired == {"c1": "v2", "c2": "v1", "c3": "v1", "c4": "v1"}  # the last ring was never touched


async def test_a_failed_health_gate_after_baking_rolls_the_ring_back(env: LocalEnvironment) -> None:
    sick_after_bake.add("c4")
    result = await env.execute_workflow(Rollout.run, spec(), id="r")
    assert result["phase"] == "halted" and result["ring"] == "last"
    assert "gate failed" in result["detail"] and restored == [{"c4": None}]


async def test_abort_during_a_bake_rolls_back_at_once(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(Rollout.run, spec(bake_seconds=3600), id="r")
    await handle.signal(Rollout.abort)
    result = await handle.result()
    assert result["phase"] == "aborted" and result["ring"] == "canary" and restored == [{"c1": None}]
