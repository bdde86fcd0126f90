"""Every billable action of a run leaves exactly one usage record with a deterministic id (LocalEnvironment
sends what a cell would send to metering)."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from perdure.platform.core import history as h
from perdure.tenants import App, RetryPolicy, activity, workflow
from perdure.tenants.testing import LocalEnvironment

app = App("usage-tests")


@app.activity
def beating(name: str) -> str:
    activity.heartbeat(1)
    activity.heartbeat(2)
    if activity.info().attempt == 1:
        raise RuntimeError("first attempt fails")
    return name


@app.workflow
class Leaf:
    @workflow.run
    async def run(self) -> str:
        return "leaf"


@app.workflow
class Metered:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, again: bool) -> str:
        workflow.side_effect(lambda: 7)
        workflow.upsert_search_attributes({"Customer": "c-1"})
        workflow.upsert_search_attributes({"Tier": 2})
        await workflow.execute_activity(
            beating,
            "b",
            start_to_close_timeout=10,
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1)),
        )
        await workflow.sleep(timedelta(minutes=1))
        await workflow.execute_child_workflow(Leaf.run, id=f"leaf-{again}")
        if again:
            await workflow.wait_condition(lambda: self.go)
            workflow.continue_as_new(False)
        return "done"

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.query
    def ready(self) -> bool:
        return self.go


@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    async with LocalEnvironment(app) as environment:
        yield environment


def _counted(events: list[h.HistoryEvent]) -> collections.Counter[str]:
    """Billable actions counted from a history, independently of the platform's own mapping."""
    counts: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.type == "marker_recorded":
            counts["side_effect" if event.marker == "side_effect" else "patch"] += 1
        else:
            counts[event.type] += 1
    return collections.Counter(
        {
            "workflow_started": counts["workflow_execution_started"],
            "signal": counts["workflow_execution_signaled"],
            "activity_started": counts["activity_task_started"],
            "timer_started": counts["timer_started"],
            "side_effect": counts["side_effect"],
            "search_attribute_update": counts["upsert_workflow_search_attributes"],
        }
    )


async def test_each_billable_action_is_one_record(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(Metered.run, True, id="metered")
    first_run = handle.run_id
    assert await handle.query(Metered.ready) is False
    await handle.signal(Metered.proceed)  # the first run continues as new
    assert await handle.result(timeout=30) == "done"

    runs = [("metered", first_run), ("metered", None), ("leaf-True", None), ("leaf-False", None)]
    expected: collections.Counter[str] = collections.Counter()
    for workflow_id, run_id in runs:
        expected += _counted(h.history_from_json(env.history(workflow_id, run_id)))
    expected["query"] = 1
    expected["activity_heartbeat"] = 2 * 2 * 2  # two per attempt, two attempts, two runs
    billed = collections.Counter(record.metric for record in env.usage)
    assert billed == expected
    assert expected["workflow_started"] == 4 and expected["activity_started"] == 4
    assert expected["search_attribute_update"] == 4 and expected["side_effect"] == 2
    assert len({record.id for record in env.usage}) == len(env.usage)
    assert {record.namespace for record in env.usage} == {"default"}
    described = await env.get_workflow_handle("metered").describe()
    assert described.search_attributes == {"Customer": "c-1", "Tier": 2}
