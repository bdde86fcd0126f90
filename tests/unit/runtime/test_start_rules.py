"""``decide_start``: every id-reuse policy against every state of the workflow id's latest run, and the
starts that are not plain (a redelivery, the next run of a continue-as-new chain, signal-with-start)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from perdure.platform.core import messages as m
from perdure.platform.core.payloads import default_converter
from perdure.platform.core.run_state import RunState, RunStatus
from perdure.platform.core.start_rules import (
    AnswerWithRun,
    IdReusePolicy,
    RefuseStart,
    SignalRun,
    StartDecision,
    StartNewRun,
    decide_start,
    fresh_run_id,
)

POLICIES: tuple[IdReusePolicy, ...] = ("allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate")
NEW_RUN = "run-new"
LATEST = "run-latest"
NEXT = "run-next"  # the run a continue-as-new chain goes on with


def latest_run(status: RunStatus) -> RunState:
    return RunState(
        namespace="ns",
        workflow_id="order-1",
        run_id=LATEST,
        workflow_type="Order",
        first_run_id=LATEST,
        status=status,
        start_time=datetime(2026, 1, 1, tzinfo=UTC),
        new_run_id=NEXT if status == "continued_as_new" else None,
    )


def start(request_id: str = "req-2", **fields: object) -> m.StartWorkflow:
    return m.StartWorkflow.model_validate(
        {"request_id": request_id, "workflow_type": "Order", "workflow_id": "order-1", **fields}
    )


def decide(
    latest: RunState | None,
    policy: IdReusePolicy,
    message: m.StartWorkflow | None = None,
    *,
    applied_before: bool = False,
) -> StartDecision:
    return decide_start(latest, message or start(), policy, run_id=NEW_RUN, applied_before=applied_before)


START = StartNewRun(NEW_RUN)
# (latest run's status, policy) -> what a plain start does; None: no run of the id yet.
TABLE: dict[tuple[RunStatus | None, IdReusePolicy], StartNewRun | type[RefuseStart]] = {
    **{(None, policy): START for policy in POLICIES},
    **{(status, policy): RefuseStart for status in ("running", "blocked") for policy in POLICIES},
    **{("continued_as_new", policy): RefuseStart for policy in POLICIES},
    ("completed", "allow_duplicate"): START,
    ("completed", "allow_duplicate_failed_only"): RefuseStart,
    ("completed", "reject_duplicate"): RefuseStart,
    **{
        (status, policy): START
        for status in ("failed", "canceled", "terminated", "timed_out")
        for policy in ("allow_duplicate", "allow_duplicate_failed_only")
    },
    **{
        (status, "reject_duplicate"): RefuseStart
        for status in ("failed", "canceled", "terminated", "timed_out")
    },
}


def test_the_table_covers_every_status_and_policy() -> None:
    statuses: tuple[RunStatus | None, ...] = (
        None,
        "running",
        "blocked",
        "completed",
        "failed",
        "canceled",
        "terminated",
        "timed_out",
        "continued_as_new",
    )
    assert set(TABLE) == {(status, policy) for status in statuses for policy in POLICIES}


@pytest.mark.parametrize(("status", "policy"), sorted(TABLE, key=str))
def test_a_plain_start_against_the_latest_run(status: RunStatus | None, policy: IdReusePolicy) -> None:
    decision = decide(latest_run(status) if status is not None else None, policy)
    expected = TABLE[(status, policy)]
    if isinstance(expected, StartNewRun):
        assert decision == expected
        return
    assert isinstance(decision, RefuseStart)
    # The run in the way: the open one (the chain's next run after a continue-as-new), else the latest.
    in_the_way = NEXT if status == "continued_as_new" else LATEST
    assert decision.run_id == in_the_way
    assert in_the_way in decision.reason and "'order-1'" in decision.reason


@pytest.mark.parametrize("policy", POLICIES)
def test_an_open_run_is_reported_as_running_whatever_the_policy(policy: IdReusePolicy) -> None:
    decision = decide(latest_run("running"), policy)
    assert isinstance(decision, RefuseStart) and "already running" in decision.reason


def test_a_closed_run_the_policy_keeps_is_named_with_its_status_and_the_policy() -> None:
    decision = decide(latest_run("completed"), "allow_duplicate_failed_only")
    assert isinstance(decision, RefuseStart)
    assert "completed" in decision.reason and "allow_duplicate_failed_only" in decision.reason


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("status", [None, "running", "completed", "failed", "continued_as_new"])
def test_a_start_applied_before_answers_with_its_run(status: RunStatus | None, policy: IdReusePolicy) -> None:
    """A redelivered start (same request, so the same run id) finds the run it created, even when later
    runs of the id came since, and whatever the policy says of them."""
    latest = latest_run(status) if status is not None else None
    assert decide(latest, policy, applied_before=True) == AnswerWithRun(NEW_RUN)


def test_a_redelivered_start_takes_the_run_id_of_its_first_delivery() -> None:
    first = fresh_run_id("ns", "order-1", "req-2")
    assert fresh_run_id("ns", "order-1", "req-2") == first
    assert first not in {fresh_run_id("ns", "order-1", "req-3"), fresh_run_id("other", "order-1", "req-2")}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("status", ["running", "completed", "continued_as_new"])
def test_the_next_run_of_a_chain_always_starts(status: RunStatus, policy: IdReusePolicy) -> None:
    following = start("run-latest/continue", continued_from_run_id=LATEST)
    assert decide(latest_run(status), policy, following) == START


def signal_with_start() -> m.StartWorkflow:
    payloads = default_converter.to_payloads(["rush"])
    return start("req-9", signal_name="expedite", signal_input=payloads)


@pytest.mark.parametrize(
    ("status", "signalled"), [("running", LATEST), ("blocked", LATEST), ("continued_as_new", NEXT)]
)
def test_signal_with_start_signals_the_open_run(status: RunStatus, signalled: str) -> None:
    decision = decide(latest_run(status), "allow_duplicate", signal_with_start())
    assert decision == SignalRun(
        signalled,
        m.SignalWorkflow(
            request_id="req-9", signal_name="expedite", input=default_converter.to_payloads(["rush"])
        ),
    )


@pytest.mark.parametrize("status", [None, "completed", "failed"])
def test_signal_with_start_starts_a_run_when_none_is_open(status: RunStatus | None) -> None:
    latest = latest_run(status) if status is not None else None
    assert decide(latest, "allow_duplicate", signal_with_start()) == START
