"""Batch operations at their edges: runs started after the batch began are not its, a namespace
deleted while a batch runs fails the batch with why (it does not end as "completed"), and a run
terminated before the batch reached it is skipped, not counted as the batch's."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from perdure.platform.control.batch_activities import BatchActivities, _Marked, _verdict
from perdure.platform.core import history as h
from perdure.platform.core.failures import ApplicationError
from perdure.platform.protocol.batch_wire import SelectedRun
from perdure.platform.stores.control_store import ControlError
from perdure.tenants.testing import LocalEnvironment

from . import test_batch_workflow as bw

pytestmark = pytest.mark.timeout(60)
env = bw.env  # the fixture: a LocalEnvironment at T0 over the test module's world of runs


async def test_runs_started_after_the_batch_began_are_left_alone(env: LocalEnvironment) -> None:
    bw.make_runs(6)
    late = bw.FakeRun(run_id="r9999", workflow_id="late", start_time=bw.T0 + timedelta(seconds=30))
    bw.world.runs.append(late)
    described = await bw.run_batch(env, bw.definition(rate=100.0))
    assert described["state"] == "completed"
    assert late.terminations == 0 and late.status == "running"
    assert [r.terminations for r in bw.world.runs[:6]] == [1] * 6
    assert described["counts"]["succeeded"] == 6


class _DeletedControl:
    async def get_namespace(self, name: str) -> Any:
        raise ControlError(f"no namespace {name!r}")


async def test_a_page_of_a_deleted_namespace_fails_the_batch_instead_of_ending_it() -> None:
    activities = BatchActivities(SimpleNamespace(control=_DeletedControl()))  # type: ignore[arg-type]
    page = [
        SelectedRun(
            run_id="r1",
            workflow_id="w1",
            start_time=datetime(2026, 1, 1, tzinfo=bw.T0.tzinfo),
            status="running",
        )
    ]
    # It returned the page as failed with no page after it: the batch then ended "completed".
    with pytest.raises(ApplicationError, match="no namespace 'ns'") as raised:
        await activities.apply_batch_page(bw.definition(), "chain", page, 5, bw.T0)
    assert raised.value.non_retryable


class _History:
    def __init__(self, terminated_at: datetime, reason: str) -> None:
        self.event = h.WorkflowExecutionTerminated(event_id=9, timestamp=terminated_at, reason=reason)

    async def read_history(self, run_id: str) -> list[h.WorkflowExecutionTerminated]:
        return [self.event]


@pytest.mark.parametrize(
    ("terminated_at", "outcome"),
    [
        (bw.T0 - timedelta(hours=1), "skipped"),  # was "succeeded": the same reason, long before
        (bw.T0 + timedelta(seconds=3), "succeeded"),  # an attempt before this one terminated it
    ],
)
async def test_a_run_terminated_before_the_page_began_is_skipped_even_with_the_batchs_reason(
    terminated_at: datetime, outcome: str
) -> None:
    batch = bw.definition(reason="cleanup")
    document = {"_id": "r1", "namespace": "ns", "workflow_id": "w1", "status": "terminated", "state": {}}
    store = _History(terminated_at, reason="cleanup")
    verdict = await _verdict(_Marked(batch, "chain", bw.T0), store, document, sent=False)  # type: ignore[arg-type]
    assert verdict is not None and verdict[0] == outcome
