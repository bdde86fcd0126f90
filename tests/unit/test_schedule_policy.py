"""What a schedule does when an action comes due: every overlap policy on a simulated clock, catch-up
after an outage, replays that must not double an action, backfills, pause and trigger-now."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perdure.platform.core.schedule_policy import (
    MAX_BUFFERED,
    Decision,
    OverlapPolicy,
    ScheduleState,
    SkipReason,
    backfill,
    backfill_times,
    decide,
    on_action_closed,
    pause,
    scheduled_workflow_id,
    trigger_now,
    unpause,
)
from perdure.platform.core.schedule_spec import IntervalSpec, ScheduleSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICIES: list[OverlapPolicy] = [
    "skip",
    "buffer_one",
    "buffer_all",
    "cancel_other",
    "terminate_other",
    "allow_all",
]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def fresh() -> ScheduleState:
    return ScheduleState(schedule_id="report")


@dataclass
class Simulation:
    """Plays the schedule's workflow on a simulated clock: a run started at ``t`` closes at
    ``t + run_time``; a cancelled one ``cancel_delay`` after the request; a terminated one at once. The
    state goes through JSON at every step, as it would through workflow state and continue-as-new."""

    policy: OverlapPolicy
    run_time: timedelta
    cancel_delay: timedelta = timedelta(minutes=1)
    catchup_window: timedelta = timedelta(days=365)
    state: ScheduleState = field(default_factory=fresh)
    open_runs: dict[str, datetime] = field(default_factory=dict)  # workflow id -> when it closes
    started: list[tuple[datetime, datetime]] = field(default_factory=list)  # (nominal time, started at)
    started_ids: list[str] = field(default_factory=list)
    skipped: list[tuple[datetime, SkipReason]] = field(default_factory=list)
    most_open: int = 0
    most_buffered: int = 0

    def due(self, nominal: datetime, now: datetime | None = None) -> Decision:
        now = now or nominal
        self.run_until(now)
        running = self.state.running_workflow_id in self.open_runs
        state, decision = decide(self.state, nominal, now, running, self.policy, self.catchup_window)
        self._apply(state, decision, now)
        return decision

    def trigger(self, now: datetime, policy: OverlapPolicy | None = None) -> Decision:
        self.run_until(now)
        running = self.state.running_workflow_id in self.open_runs
        state, decision = trigger_now(self.state, now, running, policy or self.policy)
        self._apply(state, decision, now)
        return decision

    def backfill(
        self, spec: ScheduleSpec, start: datetime, end: datetime, now: datetime, policy: OverlapPolicy
    ) -> Decision:
        self.run_until(now)
        running = self.state.running_workflow_id in self.open_runs
        state, decision = backfill(self.state, spec, start, end, now, running, policy)
        self._apply(state, decision, now)
        return decision

    def run_until(self, until: datetime) -> None:
        while self.open_runs:
            workflow_id, closes = min(self.open_runs.items(), key=lambda item: item[1])
            if closes > until:
                return
            del self.open_runs[workflow_id]
            state, decision = on_action_closed(self.state, workflow_id, closes)
            self._apply(state, decision, closes)

    def drain(self) -> None:
        self.run_until(datetime.max.replace(tzinfo=UTC))

    def _apply(self, state: ScheduleState, decision: Decision, now: datetime) -> None:
        self.state = ScheduleState.model_validate_json(state.model_dump_json())
        if decision.terminate_workflow_id is not None:
            self.open_runs[decision.terminate_workflow_id] = now
        if decision.cancel_workflow_id is not None:
            closes = self.open_runs[decision.cancel_workflow_id]
            self.open_runs[decision.cancel_workflow_id] = min(closes, now + self.cancel_delay)
        if decision.terminate_workflow_id is not None:
            self.run_until(now)  # termination is immediate: its close is reported straight away
        for start in decision.starts:
            assert start.workflow_id not in self.started_ids, f"{start.workflow_id} started twice"
            self.started_ids.append(start.workflow_id)
            self.open_runs[start.workflow_id] = now + self.run_time
            self.started.append((start.nominal_time, now))
        self.skipped += [
            (skip.nominal_time, skip.skip_reason) for skip in decision.skipped if skip.skip_reason
        ]
        self.most_open = max(self.most_open, len(self.open_runs))
        self.most_buffered = max(self.most_buffered, len(self.state.buffered))


def every_ten_minutes(policy: OverlapPolicy, run_minutes: int = 25) -> Simulation:
    """Actions due every 10 minutes from 00:00 to 01:00, each run taking 25 minutes."""
    sim = Simulation(policy, timedelta(minutes=run_minutes))
    for minute in range(0, 61, 10):
        sim.due(at(minute))
    sim.drain()
    return sim


# --- the workflow id ---------------------------------------------------------------------------------


def test_the_workflow_id_is_the_schedule_id_and_the_nominal_time() -> None:
    assert (
        scheduled_workflow_id("nightly", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        == "nightly-2026-01-02T03:04:05Z"
    )
    berlin = datetime.fromisoformat("2026-01-02T04:04:05.250+01:00")
    assert scheduled_workflow_id("nightly", berlin) == "nightly-2026-01-02T03:04:05Z"


# --- overlap policies --------------------------------------------------------------------------------


def test_skip_drops_what_comes_due_while_one_runs() -> None:
    sim = every_ten_minutes("skip")
    assert sim.started == [(at(0), at(0)), (at(30), at(30)), (at(60), at(60))]
    assert sim.skipped == [(at(10), "overlap"), (at(20), "overlap"), (at(40), "overlap"), (at(50), "overlap")]
    assert sim.state.skipped_overlap == 4
    assert sim.state.actions_taken == 3
    assert sim.most_open == 1


def test_buffer_one_keeps_the_first_that_comes_due_and_drops_the_rest() -> None:
    sim = every_ten_minutes("buffer_one")
    assert sim.started == [(at(0), at(0)), (at(10), at(25)), (at(30), at(50)), (at(50), at(75))]
    assert sim.skipped == [(at(20), "overlap"), (at(40), "overlap"), (at(60), "overlap")]
    assert sim.most_open == 1
    assert sim.most_buffered == 1


def test_buffer_all_runs_every_action_one_after_another() -> None:
    sim = every_ten_minutes("buffer_all")
    assert sim.started == [(at(minute), at(minute * 2.5)) for minute in range(0, 61, 10)]
    assert sim.skipped == []
    assert sim.most_open == 1
    assert sim.state.buffered == ()


def test_cancel_other_cancels_the_running_one_and_starts_once_it_has_closed() -> None:
    sim = every_ten_minutes("cancel_other")
    # Each cancelled run takes a minute to close; the new one starts then.
    assert sim.started == [(at(0), at(0))] + [(at(minute), at(minute + 1)) for minute in range(10, 61, 10)]
    assert sim.skipped == []
    assert sim.most_open == 1


def test_cancel_other_asks_to_cancel_the_running_run_by_its_id() -> None:
    state, first = decide(fresh(), at(0), at(0), False, "cancel_other")
    state, second = decide(state, at(10), at(10), True, "cancel_other")
    assert second.cancel_workflow_id == first.starts[0].workflow_id == "report-2026-01-01T00:00:00Z"
    assert second.terminate_workflow_id is None
    assert second.due is not None and second.due.outcome == "buffer"
    assert second.starts == ()


def test_cancel_other_while_a_cancellation_is_pending_the_latest_wins() -> None:
    state, _ = decide(fresh(), at(0), at(0), False, "cancel_other")
    state, _ = decide(state, at(10), at(10), True, "cancel_other")
    state, again = decide(state, at(20), at(20), True, "cancel_other")  # run 00:00 still closing
    assert again.cancel_workflow_id == "report-2026-01-01T00:00:00Z"
    state, closed = on_action_closed(state, "report-2026-01-01T00:00:00Z", at(21))
    assert [start.nominal_time for start in closed.starts] == [at(20)]
    assert [(skip.nominal_time, skip.skip_reason) for skip in closed.skipped] == [(at(10), "overlap")]
    assert state.running_workflow_id == "report-2026-01-01T00:20:00Z"
    assert state.buffered == ()


def test_terminate_other_terminates_the_running_one_and_starts_at_once() -> None:
    sim = every_ten_minutes("terminate_other")
    assert sim.started == [(at(minute), at(minute)) for minute in range(0, 61, 10)]
    assert sim.skipped == []
    assert sim.most_open == 1


def test_terminate_other_names_the_run_to_terminate_first() -> None:
    state, _ = decide(fresh(), at(0), at(0), False, "terminate_other")
    state, decision = decide(state, at(10), at(10), True, "terminate_other")
    assert decision.terminate_workflow_id == "report-2026-01-01T00:00:00Z"
    assert decision.cancel_workflow_id is None
    state, closed = on_action_closed(state, "report-2026-01-01T00:00:00Z", at(10))
    assert [start.workflow_id for start in closed.starts] == ["report-2026-01-01T00:10:00Z"]


def test_allow_all_starts_every_action_beside_the_running_ones() -> None:
    sim = every_ten_minutes("allow_all")
    assert sim.started == [(at(minute), at(minute)) for minute in range(0, 61, 10)]
    assert sim.skipped == []
    assert sim.most_open == 3  # 25-minute runs every 10 minutes


@pytest.mark.parametrize("policy", POLICIES)
def test_with_no_overlap_every_policy_just_starts_each_action(policy: OverlapPolicy) -> None:
    sim = every_ten_minutes(policy, run_minutes=5)
    assert sim.started == [(at(minute), at(minute)) for minute in range(0, 61, 10)]
    assert sim.skipped == []


def test_the_close_of_a_run_the_policy_is_not_waiting_on_changes_nothing() -> None:
    state, _ = decide(fresh(), at(0), at(0), False, "buffer_all")
    state, _ = decide(state, at(10), at(10), True, "buffer_all")
    after, decision = on_action_closed(state, "report-1999-01-01T00:00:00Z", at(11))
    assert after == state
    assert decision == Decision()


def test_a_close_not_yet_reported_is_seen_through_running_false() -> None:
    # The run closed, but the schedule's workflow decides the next time before handling the close.
    state, _ = decide(fresh(), at(0), at(0), False, "buffer_all")
    state, _ = decide(state, at(10), at(10), True, "buffer_all")
    state, decision = decide(state, at(20), at(26), False, "buffer_all")
    assert [start.nominal_time for start in decision.starts] == [at(10)]
    assert decision.due is not None and decision.due.outcome == "buffer"
    assert [action.nominal_time for action in state.buffered] == [at(20)]


# --- catch-up ----------------------------------------------------------------------------------------


def test_after_an_outage_times_older_than_the_catchup_window_are_missed_not_run_late() -> None:
    sim = Simulation("allow_all", timedelta(minutes=1), catchup_window=timedelta(minutes=30))
    sim.due(at(0))
    # The schedule's workflow could not run from 00:05 to 02:00; back, it decides what fell due meanwhile.
    for minute in range(10, 121, 10):
        sim.due(at(minute), now=at(120))
    missed = [nominal for nominal, reason in sim.skipped if reason == "missed_catchup"]
    assert missed == [at(minute) for minute in range(10, 81, 10)]
    assert sim.started == [(at(0), at(0))] + [(at(minute), at(120)) for minute in range(90, 121, 10)]
    assert sim.state.missed_catchup == 8


def test_catchup_under_skip_runs_one_of_the_caught_up_times() -> None:
    sim = Simulation("skip", timedelta(minutes=5), catchup_window=timedelta(minutes=30))
    for minute in range(10, 121, 10):
        sim.due(at(minute), now=at(120))
    assert sim.started == [(at(90), at(120))]
    assert Counter(reason for _, reason in sim.skipped) == {"missed_catchup": 8, "overlap": 3}


def test_the_catchup_window_edge_still_runs() -> None:
    _, decision = decide(fresh(), at(0), at(60), False, "skip", timedelta(minutes=60))
    assert decision.due is not None and decision.due.outcome == "start"
    _, late = decide(fresh(), at(0), at(60) + timedelta(seconds=1), False, "skip", timedelta(minutes=60))
    assert late.due is not None and late.due.skip_reason == "missed_catchup"


# --- replay: never doubled ---------------------------------------------------------------------------


def test_deciding_the_same_due_time_again_changes_nothing_and_starts_nothing() -> None:
    state, first = decide(fresh(), at(0), at(0), False, "allow_all")
    assert [start.workflow_id for start in first.starts] == ["report-2026-01-01T00:00:00Z"]
    replayed = ScheduleState.model_validate_json(state.model_dump_json())
    again_state, again = decide(replayed, at(0), at(1), True, "allow_all")
    assert again_state == state
    assert again.starts == ()
    assert again.due is not None and again.due.skip_reason == "already_processed"
    assert state.actions_taken == 1
    # An earlier time than the last processed one is a repeat too.
    state, _ = decide(state, at(10), at(10), True, "allow_all")
    _, older = decide(state, at(5), at(11), True, "allow_all")
    assert older.starts == ()


def test_deciding_from_the_same_state_twice_gives_the_same_start() -> None:
    # A crash after the start was sent but before the new state was kept: the decision is made again
    # from the old state, and names the same workflow id, which the engine deduplicates.
    state = fresh()
    _, first = decide(state, at(0), at(0), False, "skip")
    _, second = decide(state, at(0), at(0), False, "skip")
    assert first == second
    assert first.starts[0].workflow_id == "report-2026-01-01T00:00:00Z"


def test_an_action_already_buffered_or_running_is_not_added_again() -> None:
    state, _ = trigger_now(fresh(), at(0), False, "buffer_all")
    # A scheduled time in the same second as the trigger is the same action (the same workflow id).
    state, decision = decide(state, at(0), at(0), True, "buffer_all")
    assert decision.due is not None and decision.due.skip_reason == "already_processed"
    assert state.buffered == ()


# --- pause -------------------------------------------------------------------------------------------


def test_a_paused_schedule_skips_its_times_and_runs_again_once_unpaused() -> None:
    state = pause(fresh(), "maintenance")
    assert state.paused and state.note == "maintenance"
    state, decision = decide(state, at(0), at(0), False, "skip")
    assert decision.due is not None and decision.due.skip_reason == "paused"
    assert decision.starts == ()
    state = unpause(state)
    assert not state.paused and state.note == "Unpaused via API"
    state, decision = decide(state, at(10), at(10), False, "skip")
    assert [start.nominal_time for start in decision.starts] == [at(10)]
    assert state.skipped_paused == 1


def test_a_buffered_scheduled_action_whose_turn_comes_while_paused_is_dropped() -> None:
    state, _ = decide(fresh(), at(0), at(0), False, "buffer_all")
    state, _ = decide(state, at(10), at(10), True, "buffer_all")
    state = pause(state)
    state, closed = on_action_closed(state, "report-2026-01-01T00:00:00Z", at(25))
    assert closed.starts == ()
    assert [(skip.nominal_time, skip.skip_reason) for skip in closed.skipped] == [(at(10), "paused")]
    assert state.buffered == ()
    assert state.running_workflow_id is None


def test_a_buffered_action_keeps_its_place_across_a_short_pause() -> None:
    state, _ = decide(fresh(), at(0), at(0), False, "buffer_all")
    state, _ = decide(state, at(10), at(10), True, "buffer_all")
    state = pause(state)
    state, paused = decide(state, at(20), at(20), True, "buffer_all")
    assert paused.due is not None and paused.due.skip_reason == "paused"
    state = unpause(state)
    state, closed = on_action_closed(state, "report-2026-01-01T00:00:00Z", at(25))
    assert [start.nominal_time for start in closed.starts] == [at(10)]


# --- trigger now -------------------------------------------------------------------------------------


def test_trigger_now_starts_an_action_named_after_now() -> None:
    now = at(7) + timedelta(seconds=3)
    state, decision = trigger_now(fresh(), now, False, "skip")
    assert decision.due is not None and decision.due.outcome == "start"
    assert decision.due.workflow_id == "report-2026-01-01T00:07:03Z"
    assert decision.due.source == "trigger"
    assert state.running_workflow_id == "report-2026-01-01T00:07:03Z"
    assert state.recent_actions[-1].source == "trigger"
    assert state.last_processed_time is None  # a trigger is not one of the spec's times


def test_trigger_now_goes_through_the_overlap_policy() -> None:
    sim = Simulation("skip", timedelta(minutes=30))
    sim.due(at(0))
    skipped = sim.trigger(at(5))
    assert skipped.due is not None and skipped.due.skip_reason == "overlap"
    buffered = sim.trigger(at(6), policy="buffer_one")  # a trigger request naming its own policy
    assert buffered.due is not None and buffered.due.outcome == "buffer"
    sim.drain()
    assert sim.started == [(at(0), at(0)), (at(6), at(30))]


def test_trigger_now_runs_while_paused() -> None:
    state, decision = trigger_now(pause(fresh()), at(0), False, "skip")
    assert decision.due is not None and decision.due.outcome == "start"
    assert state.paused


# --- backfill ----------------------------------------------------------------------------------------

HOURLY = ScheduleSpec(intervals=(IntervalSpec(every=timedelta(hours=1)),))


def test_backfill_times_include_both_ends() -> None:
    assert backfill_times(HOURLY, at(0), at(180)) == [at(0), at(60), at(120), at(180)]
    assert backfill_times(HOURLY, at(1), at(179)) == [at(60), at(120)]


def test_a_backfill_under_allow_all_starts_everything_at_once() -> None:
    sim = Simulation("skip", timedelta(minutes=30))
    sim.due(at(24 * 60))  # the schedule's own run, still running during the backfill
    decision = sim.backfill(HOURLY, at(0), at(180), now=at(24 * 60 + 1), policy="allow_all")
    assert [start.nominal_time for start in decision.starts] == [at(0), at(60), at(120), at(180)]
    assert all(start.source == "backfill" for start in decision.starts)
    assert sim.state.running_workflow_id == "report-2026-01-02T00:00:00Z"  # still the one to overlap


def test_a_backfill_under_buffer_all_runs_its_actions_one_after_another() -> None:
    sim = Simulation("skip", timedelta(minutes=30))
    sim.backfill(HOURLY, at(0), at(180), now=at(24 * 60), policy="buffer_all")
    sim.drain()
    start = at(24 * 60)
    assert sim.started == [(at(60 * n), start + timedelta(minutes=30 * n)) for n in range(4)]


def test_a_backfill_through_skip_while_one_runs_takes_nothing() -> None:
    sim = Simulation("skip", timedelta(minutes=30))
    sim.due(at(24 * 60))
    decision = sim.backfill(HOURLY, at(0), at(180), now=at(24 * 60 + 1), policy="skip")
    assert decision.starts == ()
    assert [skip.skip_reason for skip in decision.skipped] == ["overlap"] * 4


def test_a_backfill_runs_while_paused_and_ignores_the_catchup_window() -> None:
    state, decision = backfill(
        pause(fresh()), HOURLY, at(0), at(60), at(365 * 24 * 60 * 3), False, "allow_all"
    )
    assert len(decision.starts) == 2
    assert state.missed_catchup == 0


def test_a_backfill_beyond_the_buffer_is_skipped_as_buffer_full() -> None:
    every_minute = ScheduleSpec(intervals=(IntervalSpec(every=timedelta(minutes=1)),))
    end = at(MAX_BUFFERED + 9)  # MAX_BUFFERED + 10 times
    state, decision = backfill(fresh(), every_minute, at(0), end, at(5000), False, "buffer_all")
    assert len(decision.starts) == 1
    assert len(state.buffered) == MAX_BUFFERED - 1
    assert Counter(skip.skip_reason for skip in decision.skipped) == {"buffer_full": 10}
    assert state.buffer_dropped == 10


def test_a_backfill_of_a_time_the_schedule_already_runs_does_not_double_it() -> None:
    state, _ = decide(fresh(), at(60), at(60), False, "skip")
    state, decision = backfill(state, HOURLY, at(60), at(120), at(61), True, "allow_all")
    assert [start.nominal_time for start in decision.starts] == [at(120)]
    assert [(skip.nominal_time, skip.skip_reason) for skip in decision.skipped] == [
        (at(60), "already_processed")
    ]


# --- state -------------------------------------------------------------------------------------------


def test_recent_actions_keep_the_last_ten() -> None:
    sim = Simulation("allow_all", timedelta(minutes=1))
    for minute in range(0, 150, 10):
        sim.due(at(minute))
    assert [action.nominal_time for action in sim.state.recent_actions] == [at(m) for m in range(50, 150, 10)]
    assert sim.state.actions_taken == 15


# --- properties --------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    gaps=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=25),
    run_minutes=st.integers(min_value=1, max_value=120),
    cancel_minutes=st.integers(min_value=0, max_value=30),
    replays=st.lists(st.booleans(), max_size=25),
)
def test_every_due_time_is_started_once_or_skipped_once(
    policy: OverlapPolicy, gaps: list[int], run_minutes: int, cancel_minutes: int, replays: list[bool]
) -> None:
    sim = Simulation(policy, timedelta(minutes=run_minutes), cancel_delay=timedelta(minutes=cancel_minutes))
    minute = 0
    dues = []
    for index, gap in enumerate(gaps):
        minute += gap
        dues.append(at(minute))
        sim.due(at(minute))
        if index < len(replays) and replays[index]:
            repeat = sim.due(at(minute))  # a replay decides it again
            assert repeat.starts == () and repeat.due is not None
            assert repeat.due.skip_reason == "already_processed"
        if policy == "buffer_one":
            assert len(sim.state.buffered) <= 1
    sim.drain()
    assert sim.state.buffered == ()
    fates = Counter(nominal for nominal, _ in sim.started)
    fates.update(nominal for nominal, reason in sim.skipped if reason != "already_processed")
    assert fates == Counter(dues)
    assert sim.state.actions_taken == len(sim.started)
    assert sim.state.skipped_overlap == sum(1 for _, reason in sim.skipped if reason == "overlap")
    assert all(started >= nominal for nominal, started in sim.started)
    if policy != "allow_all":
        assert sim.most_open <= 1  # never two of the schedule's actions at once
        assert all(a[0] < b[0] for a, b in pairwise(sim.started))  # and in their order
