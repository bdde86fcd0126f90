"""Crash and resume, non-determinism detection, versioning with ``patched``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from perdure.platform.core import history as h
from perdure.tenants import NonDeterminismError
from perdure.tenants.testing import LocalEnvironment, replay

from . import workflows as w


@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    w.calls.clear()
    async with LocalEnvironment(w.app) as environment:
        yield environment


def _prefix_before_step_3(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Everything up to step 2's completion: the crash hit before step 3 was scheduled."""
    completed = [i for i, e in enumerate(history) if e["type"] == "activity_task_completed"]
    return history[: completed[1] + 1]


async def test_resume_after_a_crash_does_not_rerun_finished_steps(env: LocalEnvironment) -> None:
    await env.execute_workflow(w.ThreeSteps.run, "crash", id="three")
    prefix = _prefix_before_step_3(env.history("three"))
    assert [e["type"] for e in prefix].count("activity_task_completed") == 2
    w.calls.clear()

    async with LocalEnvironment(w.app) as fresh:  # the old instance and process are gone
        handle = await fresh.resume(prefix)
        assert await handle.result() == ["crash-1-done", "crash-2-done", "crash-3-done"]
        events = h.history_from_json(fresh.history("three"))
    assert w.calls["crash-1"] == 0 and w.calls["crash-2"] == 0
    assert w.calls["crash-3"] == 1
    assert events[: len(prefix)] == h.history_from_json(prefix)
    assert sum(h.is_close_event(e) for e in events) == 1


async def test_resume_from_a_prefix_with_step_3_in_flight_reruns_it(env: LocalEnvironment) -> None:
    await env.execute_workflow(w.ThreeSteps.run, "flight", id="three")
    history = env.history("three")
    scheduled = [i for i, e in enumerate(history) if e["type"] == "activity_task_scheduled"]
    prefix = history[: scheduled[2] + 1]  # step 3 scheduled, its result lost with the crash
    w.calls.clear()
    async with LocalEnvironment(w.app) as fresh:
        assert (await (await fresh.resume(prefix)).result())[2] == "flight-3-done"
    assert dict(w.calls) == {"flight-3": 1}


_swap = w.swapped


async def test_reordering_two_activities_is_detected(env: LocalEnvironment) -> None:
    assert await env.execute_workflow(w.Reordered.run, id="order") == "v1"
    history = env.history("order")
    replay(w.app, history)  # unchanged code replays
    with pytest.raises(NonDeterminismError) as error:
        replay(_swap(w.app, "Reordered", w.ReorderedV2), history)
    assert error.value.event_id == 2
    assert "'step'" in error.value.expected and "'sync_step'" in error.value.actual


async def test_reordering_parks_a_live_run_until_it_is_redriven(env: LocalEnvironment) -> None:
    # Record half a run with v1, then let v2 continue it: the run is parked, not failed.
    await env.execute_workflow(w.Reordered.run, id="order")
    prefix = env.history("order")[:5]
    async with LocalEnvironment(_swap(w.app, "Reordered", w.ReorderedV2)) as changed:
        handle = await changed.resume(prefix)
        description = await handle.describe()
        assert description.status == "blocked"
        assert "non-determinism at event 2" in (description.blocked_reason or "")


async def test_patched_lets_old_and_new_histories_replay(env: LocalEnvironment) -> None:
    old_app = _swap(w.app, "Versioned", w.PatchedV1)
    async with LocalEnvironment(old_app) as old_env:
        assert await old_env.execute_workflow("Versioned", id="v") == "old-path"
        old_history = old_env.history("v")
        # A run that was mid-way under the old code when the new code was deployed.
        old_prefix = old_history[:6]
    new_app = _swap(w.app, "Versioned", w.PatchedV2)
    async with LocalEnvironment(new_app) as new_env:
        assert await new_env.execute_workflow("Versioned", id="v") == "new-path"
        new_history = new_env.history("v")
        resumed = await new_env.resume(old_prefix)
        assert await resumed.result() == "old-path"
    replay(new_app, old_history)
    replay(new_app, new_history)
    assert any(e["type"] == "marker_recorded" and e["marker"] == "patch" for e in new_history)
    with pytest.raises(NonDeterminismError):
        replay(old_app, new_history)


async def test_history_is_json_and_validates(env: LocalEnvironment) -> None:
    import json

    await env.execute_workflow(w.ThreeSteps.run, "j", id="json")
    data = json.loads(json.dumps(env.history("json")))
    events = h.history_from_json(data)
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    broken = data[:3] + data[4:]
    with pytest.raises(ValueError, match="contiguous"):
        h.history_from_json(broken)
