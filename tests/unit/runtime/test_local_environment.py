"""The runtime end to end in LocalEnvironment: no services, virtual time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from perdure.platform.core import history as h
from perdure.tenants import (
    ChildWorkflowError,
    NondeterministicCallError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
)
from perdure.tenants.testing import LocalEnvironment

from . import workflows as w


@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    w.calls.clear()
    async with LocalEnvironment(w.app) as environment:
        yield environment


def _types(env: LocalEnvironment, workflow_id: str) -> list[str]:
    return [e["type"] for e in env.history(workflow_id)]


def _assert_valid(env: LocalEnvironment, workflow_id: str) -> None:
    events = h.history_from_json(env.history(workflow_id))  # validates contiguous ids
    assert sum(h.is_close_event(e) for e in events) == 1
    assert h.is_close_event(events[-1])


async def test_three_activities_run_in_order(env: LocalEnvironment) -> None:
    assert await env.execute_workflow(w.ThreeSteps.run, "p", id="three") == [
        "p-1-done",
        "p-2-done",
        "p-3-done",
    ]
    assert [w.calls[f"p-{i}"] for i in (1, 2, 3)] == [1, 1, 1]
    _assert_valid(env, "three")
    assert _types(env, "three").count("activity_task_completed") == 3


async def test_the_readme_example_sleeps_an_hour_instantly() -> None:
    from examples.orders import OrderWorkflow, app

    async with LocalEnvironment(app) as env:
        started = time.monotonic()
        handle = await env.start_workflow(OrderWorkflow.run, "o-1", id="order-1")
        assert await handle.query(OrderWorkflow.status) == "waiting"
        await handle.signal(OrderWorkflow.approve)
        assert await handle.result() == "receipt-o-1-100"
        assert time.monotonic() - started < 2
        assert env.now() - (await handle.describe()).start_time >= timedelta(hours=1)
        assert await handle.query(OrderWorkflow.status) == "approved"


async def test_activity_failing_twice_then_succeeding(env: LocalEnvironment) -> None:
    assert await env.execute_workflow(w.Retrying.run, "f", 2, id="retry") == "f-ok-after-3"
    assert w.calls["f"] == 3
    events = h.history_from_json(env.history("retry"))
    retries = [e for e in events if isinstance(e, h.ActivityTaskRetryScheduled)]
    assert [r.failed_attempt for r in retries] == [1, 2]
    assert [r.backoff for r in retries] == [timedelta(seconds=1), timedelta(seconds=2)]
    assert "attempt 1 failed" in retries[0].failure.message


async def test_retries_stop_at_maximum_attempts(env: LocalEnvironment) -> None:
    with pytest.raises(WorkflowFailureError) as failure:
        await env.execute_workflow(w.Retrying.run, "never", 99, id="exhaust")
    assert w.calls["never"] == 5
    assert "activity 'flaky' failed" in str(failure.value.cause)
    assert "attempt 5 failed" in str(failure.value.cause.__cause__)  # type: ignore[union-attr]


async def test_a_non_retryable_error_ends_retries(env: LocalEnvironment) -> None:
    assert await env.execute_workflow(w.NonRetryable.run, "nr", id="nr") == "CardDeclined:51"
    assert w.calls["nr"] == 1


async def test_signals_timers_and_wait_condition_in_order(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(w.SignalsAndTimers.run, id="st")
    await handle.signal(w.SignalsAndTimers.note, "early")
    await handle.signal(w.SignalsAndTimers.proceed)
    await handle.signal(w.SignalsAndTimers.note, "late")
    events = await handle.result()
    assert events[0].startswith("start@")
    assert events[1:] == ["signal:early", "signal:late", "slept", "go", "timed-out"]
    types = _types(env, "st")
    assert types.count("timer_started") == 2 and types.count("timer_fired") == 2


async def test_typed_payloads_round_trip(env: LocalEnvironment) -> None:
    result = await env.execute_workflow(w.Typed.run, w.Order(order_id="x", amount=21), id="typed")
    assert result == w.Order(order_id="x", amount=42)


async def test_child_workflows(env: LocalEnvironment) -> None:
    result = await env.execute_workflow(w.Parent.run, [1, 2, 3], id="parent")
    assert result == {"results": [10, 20, 30], "failed": "ChildWorkflowError<-ApplicationError"}
    assert _types(env, "parent").count("child_workflow_execution_closed") == 4
    _assert_valid(env, "parent-c2")
    assert ChildWorkflowError.__name__ in result["failed"]


async def test_continue_as_new_chains_runs(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(w.Counter.run, 0, 4, id="counter")
    assert await handle.result() == 4
    runs = env._runs["counter"]
    assert [r.state.status for r in runs] == ["continued_as_new"] * 3 + ["completed"]
    assert len({r.state.first_run_id for r in runs}) == 1
    assert all(len(r.history) <= 5 for r in runs)  # each run's history starts over


async def test_cancellation_runs_cleanup(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(w.Cancellable.run, id="cancel-me")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError, match="canceled"):
        await handle.result()
    assert w.calls["cleanup"] == 1
    types = _types(env, "cancel-me")
    assert types[-1] == "workflow_execution_canceled"
    assert "timer_canceled" in types


async def test_terminate_closes_at_once(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(w.Cancellable.run, id="term")
    await handle.terminate("ops said so")
    with pytest.raises(WorkflowFailureError, match="terminated"):
        await handle.result()
    assert w.calls["cleanup"] == 0


async def test_same_request_id_yields_the_same_run(env: LocalEnvironment) -> None:
    first = await env.start_workflow(w.Cancellable.run, id="dup", request_id="req-1")
    again = await env.start_workflow(w.Cancellable.run, id="dup", request_id="req-1")
    assert again.run_id == first.run_id
    with pytest.raises(WorkflowAlreadyStartedError):
        await env.start_workflow(w.Cancellable.run, id="dup", request_id="req-2")


async def test_reject_duplicate_refuses_an_id_used_before_and_names_its_run(env: LocalEnvironment) -> None:
    first = await env.start_workflow(w.Child.run, 0, id="once")
    assert await first.result() == 0
    with pytest.raises(WorkflowAlreadyStartedError) as refused:
        await env.start_workflow(w.Child.run, 1, id="once", id_reuse_policy="reject_duplicate")
    assert refused.value.run_id == first.run_id and "reject_duplicate" in str(refused.value)
    assert env.get_workflow_handle("once").run_id == first.run_id  # nothing was started
    second = await env.start_workflow(w.Child.run, 2, id="once", id_reuse_policy="allow_duplicate")
    assert second.run_id != first.run_id and await second.result() == 20


async def test_allow_duplicate_failed_only_reuses_an_id_only_after_a_failure(env: LocalEnvironment) -> None:
    assert await env.execute_workflow(w.Child.run, 0, id="done") == 0
    with pytest.raises(WorkflowAlreadyStartedError):
        await env.start_workflow(w.Child.run, 1, id="done", id_reuse_policy="allow_duplicate_failed_only")
    with pytest.raises(WorkflowFailureError):
        await env.execute_workflow(w.Child.run, -1, id="failed")
    again = await env.start_workflow(
        w.Child.run, 1, id="failed", id_reuse_policy="allow_duplicate_failed_only"
    )
    assert await again.result() == 10


async def test_a_start_sent_again_after_later_runs_answers_with_its_own_run(env: LocalEnvironment) -> None:
    """As the engine does with a redelivered start: the request's run is found by its run id, not only
    when it is the latest run of the id."""
    first = await env.start_workflow(w.Child.run, 0, id="again", request_id="req-1")
    await first.result()
    later = await env.start_workflow(w.Child.run, 1, id="again", request_id="req-2")
    await later.result()
    resent = await env.start_workflow(w.Child.run, 0, id="again", request_id="req-1")
    assert resent.run_id == first.run_id
    assert env.get_workflow_handle("again").run_id == later.run_id  # still the latest: nothing started


async def test_randomness_and_side_effects_replay_identically(env: LocalEnvironment) -> None:
    from perdure.tenants.testing import replay

    first = await env.execute_workflow(w.Deterministic.run, id="det")
    replay(w.app, env.history("det"))
    markers = [e for e in h.history_from_json(env.history("det")) if isinstance(e, h.MarkerRecorded)]
    assert len(markers) == 1 and markers[0].marker == "side_effect"
    assert first[2] == str(float(markers[0].value.data))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("how", "replacement"),
    [
        ("sleep", "workflow.sleep"),
        ("clock", "workflow.now"),
        ("datetime", "workflow.now"),
        ("thread", "an activity"),
        ("network", "an activity"),
        ("random", "workflow.random()"),
    ],
)
async def test_nondeterministic_calls_name_their_replacement(
    env: LocalEnvironment, how: str, replacement: str
) -> None:
    handle = await env.start_workflow(w.Cheater.run, how, id=f"cheat-{how}")
    description = await handle.describe()
    assert description.status == "blocked"
    assert description.blocked_reason is not None and replacement in description.blocked_reason
    assert NondeterministicCallError.__name__ in description.blocked_reason


async def test_crashing_code_parks_the_run(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(w.Crashy.run, id="crashy")
    await env.idle()
    description = await handle.describe()
    assert description.status == "blocked"
    assert "KeyError" in (description.blocked_reason or "")
    assert _types(env, "crashy")[-1] == "workflow_task_failed"


async def test_execution_timeout_closes_the_run_as_timed_out(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(w.Cancellable.run, id="slow", execution_timeout=timedelta(hours=1))
    with pytest.raises(WorkflowFailureError, match="timed_out"):
        await handle.result()
    description = await env.get_workflow_handle("slow").describe()
    assert description.status == "timed_out" and description.pending_timers == 0
    assert _types(env, "slow")[-1] == "workflow_execution_timed_out"


async def test_signal_with_start_starts_or_signals(env: LocalEnvironment) -> None:
    handle = await env.signal_with_start(w.SignalsAndTimers.run, id="sws", signal=w.SignalsAndTimers.proceed)
    again = await env.signal_with_start(
        w.SignalsAndTimers.run, id="sws", signal=w.SignalsAndTimers.note, signal_args=["second"]
    )
    assert again.run_id == handle.run_id
    events = await handle.result()
    assert events[1:] == ["signal:second", "slept", "go", "timed-out"]
    assert _types(env, "sws")[:2] == ["workflow_execution_started", "timer_started"]


async def test_unknown_workflow_types_and_queries_are_refused_clearly(env: LocalEnvironment) -> None:
    from perdure.tenants import ApplicationError, UnknownWorkflowTypeError

    with pytest.raises(UnknownWorkflowTypeError, match="unknown workflow type 'Nope'"):
        await env.start_workflow("Nope", id="nope")
    handle = await env.start_workflow(w.SignalsAndTimers.run, id="q")
    with pytest.raises(ApplicationError, match="unknown query 'missing'; the workflow answers: seen"):
        await handle.query("missing")
    assert await handle.query(w.SignalsAndTimers.seen) == [
        f"start@{(await handle.describe()).start_time.isoformat()}"
    ]


async def test_queries_leave_no_trace_in_the_run(env: LocalEnvironment) -> None:
    from perdure.tenants import ApplicationError

    handle = await env.start_workflow(w.Curious.run, id="curious")
    # The random stream is restored after each query: asking twice sees the same next number, the one
    # the run then draws itself.
    peek = await handle.query(w.Curious.next_draw)
    assert await handle.query(w.Curious.next_draw) == peek
    with pytest.raises(ApplicationError, match="must not issue commands") as refused:
        await handle.query(w.Curious.meddle)
    assert refused.value.type == "QueryIssuedCommands"
    await handle.signal(w.Curious.proceed)
    assert await handle.result() == [peek, "curious-done"]
    assert _types(env, "curious").count("activity_task_scheduled") == 1
    assert "meddled" not in w.calls
    _assert_valid(env, "curious")


async def test_a_run_past_its_history_limit_is_terminated_with_the_reason() -> None:
    from perdure.platform.core.run_state import RunLimits
    from perdure.tenants import WorkflowFailureError

    limits = RunLimits(warn_events=20, max_events=40, max_bytes=10_000_000)
    async with LocalEnvironment(w.app, limits=limits) as env:
        runaway = await env.start_workflow(w.Runaway.run, id="runaway")
        sound = await env.start_workflow(w.ThreeSteps.run, "ok", id="sound")
        with pytest.raises(WorkflowFailureError):
            await runaway.result()
        description = await runaway.describe()
        assert description.status == "terminated"
        assert 40 <= description.history_length <= 41
        last = env.history("runaway")[-1]
        assert last["type"] == "workflow_execution_terminated"
        assert "history limit exceeded: 40 events" in last["reason"]
        assert await sound.result() == ["ok-1-done", "ok-2-done", "ok-3-done"]
    small = RunLimits(max_events=1000, warn_bytes=100, max_bytes=4_000)
    async with LocalEnvironment(w.app, limits=small) as env:
        runaway = await env.start_workflow(w.Runaway.run, id="runaway")
        with pytest.raises(WorkflowFailureError):
            await runaway.result()
        assert "4000 bytes" in env.history("runaway")[-1]["reason"]
