"""What the schedule's workflow records beyond the policy's decisions: a start that admission refused
(undone and counted as skipped), and a large backlog of missed times counted at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from perdure.platform.core.schedule_policy import (
    ScheduleState,
    decide,
    miss_catchup,
    scheduled_workflow_id,
    start_refused,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_refused_start_is_undone_and_counted_as_skipped() -> None:
    state = ScheduleState(schedule_id="s", last_processed_time=T0)
    state, first = decide(state, T0 + timedelta(minutes=1), T0 + timedelta(minutes=1), False, "allow_all")
    state, _ = decide(state, T0 + timedelta(minutes=2), T0 + timedelta(minutes=2), False, "skip")
    refused = scheduled_workflow_id("s", T0 + timedelta(minutes=2))
    assert state.running_workflow_id == refused and state.actions_taken == 2
    after = start_refused(state, refused)
    assert after.actions_taken == 1 and after.skipped_refused == 1
    assert [action.workflow_id for action in after.recent_actions] == [first.starts[0].workflow_id]
    assert after.running_workflow_id is None  # nothing it started runs: the next action is not held
    assert after.last_processed_time == T0 + timedelta(minutes=2)  # decided: never decided again
    # A refused start that was not the watched one leaves the watched one alone.
    other = start_refused(state.model_copy(update={"running_workflow_id": "x"}), refused)
    assert other.running_workflow_id == "x"


def test_missed_times_are_counted_at_once_up_to_a_time() -> None:
    state = ScheduleState(schedule_id="s", last_processed_time=T0, missed_catchup=2)
    after = miss_catchup(state, T0 + timedelta(days=1), 86_400)
    assert after.missed_catchup == 86_402 and after.last_processed_time == T0 + timedelta(days=1)
    assert miss_catchup(state, T0 + timedelta(seconds=1), 0).missed_catchup == 2
    with pytest.raises(ValueError, match="after the last processed time"):
        miss_catchup(state, T0, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        miss_catchup(state, datetime(2026, 1, 2), 1)
