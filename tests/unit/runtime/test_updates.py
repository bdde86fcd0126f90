"""Workflow updates (issue 15): the state machine's side (pending updates ride workflow tasks, accepted
and completed events, answers through the outbox, ids deduplicated, bounds), the worker's side (the
validator, the handler on the deterministic loop, replay), and the same API in ``LocalEnvironment``."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from typing import Any

import pytest

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.commands import AcceptUpdate, CompleteUpdate
from perdure.platform.core.payloads import Payload, default_converter
from perdure.platform.core.run_state import rebuild_state
from perdure.platform.core.state_machine import (
    MAX_PENDING_UPDATE_BYTES,
    MAX_UPDATE_WAITERS,
    MAX_UPDATES_IN_FLIGHT,
    Transition,
)
from perdure.platform.core.workflow_activations import WorkflowActivations
from perdure.tenants import ApplicationError, NonDeterminismError, WorkflowNotFoundError, workflow
from perdure.tenants.client_errors import WorkflowUpdateFailedError
from perdure.tenants.testing import LocalEnvironment, replay

from . import update_workflows as u
from . import workflows as w
from .test_state_machine import Clock, Run


def _worker(queue: str | None = "worker-1") -> WorkflowActivations:
    return WorkflowActivations(u.app, sticky_queue=queue)


def _update(update_id: str, name: str, *args: Any, wait_for: m.UpdateStage = "completed") -> m.UpdateWorkflow:
    return m.UpdateWorkflow(
        update_id=update_id,
        update_name=name,
        input=default_converter.to_payloads(list(args)),
        wait_for=wait_for,
    )


def _waiter(
    correlation: str, wait_for: m.UpdateStage = "completed", queue: str = "client-1"
) -> m.UpdateWaiter:
    return m.UpdateWaiter(reply_to=queue, correlation_id=correlation, wait_for=wait_for)


def _send_update(run: Run, update: m.UpdateWorkflow, waiter: m.UpdateWaiter | None) -> Transition:
    assert run.state is not None
    return run._take(run.machine.update(run.state, update, waiter, run.history))


def _replies(transition: Transition | list[o.OutboxEntry]) -> list[o.UpdateReply]:
    entries = transition.outbox if isinstance(transition, Transition) else transition
    return [e for e in entries if isinstance(e, o.UpdateReply)]


def _value(payload: Payload | None) -> Any:
    assert payload is not None
    return default_converter.from_payload(payload)


def _started_cart(run: Run, worker: WorkflowActivations) -> None:
    run.start("Cart", "c-1")
    run.work(worker)


# -- the state machine ------------------------------------------------------------------------------
def test_an_update_is_no_event_until_the_code_takes_it_and_its_answers_leave_through_the_outbox() -> None:
    run, worker = Run(), _worker()
    _started_cart(run, worker)
    assert run.state is not None and run.state.workflow_task is None
    before = run.state.next_event_id
    taken = _send_update(run, _update("u-1", "add_item", "pen"), _waiter("c-1"))
    assert not taken.events  # kept in the run's state, not in its history
    assert [p.update_id for p in run.state.pending_updates] == ["u-1"]
    task = run.task()  # a workflow task goes out for it, with no new event for the code to see
    assert [x.update_id for x in task.updates] == ["u-1"] and task.task_id
    assert task.sticky_queue == "worker-1" and task.last_event_id == before - 1
    done = run.work(worker)
    assert [type(e) for e in done.events] == [
        h.WorkflowExecutionUpdateAccepted,
        h.WorkflowExecutionUpdateCompleted,
    ]
    accepted, completed = done.events
    assert isinstance(accepted, h.WorkflowExecutionUpdateAccepted)
    assert _value(accepted.input[0]) == "pen" and accepted.update_name == "add_item"
    (reply,) = _replies(done)
    assert reply.outcome == "completed" and _value(reply.result) == 1
    assert reply.waiters == [_waiter("c-1")]
    assert not run.state.pending_updates and not run.state.accepted_updates
    assert [(c.update_id, c.completed_event_id) for c in run.state.completed_updates] == [
        ("u-1", completed.event_id)
    ]
    # Billed once it was taken, by its accepted event.
    usage = [r for e in done.outbox if isinstance(e, o.RecordUsage) for r in e.records]
    assert [(r.metric, r.id) for r in usage] == [("update", f"run-0/{accepted.event_id}")]


def test_a_validators_refusal_leaves_no_trace_in_the_history_and_is_answered_and_billed() -> None:
    run, worker = Run(), _worker()
    _started_cart(run, worker)
    assert run.state is not None
    length = len(run.history)
    _send_update(run, _update("empty", "add_item", ""), _waiter("c-1"))
    refused = run.work(worker)
    assert not refused.events and len(run.history) == length
    (reply,) = _replies(refused)
    assert reply.outcome == "rejected" and reply.failure is not None
    assert reply.failure.type == "EmptyItem" and reply.failure.message == "an item needs a name"
    assert not run.state.pending_updates and not run.state.completed_updates
    usage = [r for e in refused.outbox if isinstance(e, o.RecordUsage) for r in e.records]
    assert [(r.metric, r.id) for r in usage] == [("update", "update/run-0/empty/rejected")]
    # An unknown update is refused the same way, naming the updates the workflow has.
    _send_update(run, _update("nope", "no_such_update"), _waiter("c-2"))
    (unknown,) = _replies(run.work(worker))
    assert unknown.outcome == "rejected" and unknown.failure is not None
    assert unknown.failure.type == "UnknownUpdate"
    assert "add_item, checkout, fail" in unknown.failure.message
    assert len(run.history) == length


def test_the_same_update_id_is_one_update_whenever_it_comes_again() -> None:
    run, worker = Run(), _worker()
    _started_cart(run, worker)
    assert run.state is not None
    _send_update(run, _update("co", "checkout", "ann"), _waiter("c-1", "accepted"))
    # Again before the code took it: one update, with one more waiter each time.
    _send_update(run, _update("co", "checkout", "ann"), _waiter("c-2", "completed"))
    _send_update(run, _update("co", "checkout", "ann"), _waiter("c-3", "completed", queue="client-2"))
    assert len(run.state.pending_updates) == 1
    assert [w.correlation_id for w in run.state.pending_updates[0].waiters] == ["c-1", "c-2", "c-3"]
    taken = run.work(worker)
    assert [type(e) for e in taken.events] == [h.WorkflowExecutionUpdateAccepted]
    (accepted,) = _replies(taken)
    assert accepted.outcome == "accepted" and [w.correlation_id for w in accepted.waiters] == ["c-1"]
    # Again while its handler runs: joins it (or is told at once that it was taken).
    at_once = _send_update(run, _update("co", "checkout", "ann"), _waiter("c-4", "accepted"))
    assert [r.outcome for r in _replies(at_once)] == ["accepted"] and not at_once.events
    _send_update(run, _update("co", "checkout", "ann"), _waiter("c-5", "completed", queue="client-3"))
    run.send(m.SignalWorkflow(request_id="s", signal_name="approve"))
    run.run_to_close(worker)
    completions = [r for r in _replies(run.sent) if r.outcome == "completed"]
    assert len(completions) == 1
    assert {w.correlation_id for w in completions[0].waiters} == {"c-2", "c-3", "c-5"}
    assert _value(completions[0].result) == "done-4 approved by ann"
    events = [e for e in run.history if isinstance(e, h.WorkflowExecutionUpdateAccepted)]
    assert len(events) == 1  # one execution of the handler
    # Again after it finished, the run closed meanwhile: answered from its completed event.
    again = _send_update(run, _update("co", "checkout", "someone else"), _waiter("c-6"))
    (answer,) = _replies(again)
    assert answer.outcome == "completed" and _value(answer.result) == "done-4 approved by ann"
    # An id the closed run does not know: it takes no update.
    (closed,) = _replies(_send_update(run, _update("late", "add_item", "x"), _waiter("c-7")))
    assert closed.outcome == "run_closed" and closed.run_status == "completed"
    assert "takes no update" in closed.message


def test_an_update_waits_for_the_task_in_flight_and_sees_the_messages_before_it() -> None:
    run, worker = Run(), _worker()
    _started_cart(run, worker)
    _send_update(run, _update("co", "checkout", "ann"), _waiter("c-1"))
    first = run.task()
    assert run.state is not None and run.state.workflow_task is not None
    # While that task is in flight: a signal (waits for the code), then an update (waits behind it).
    run.send(m.SignalWorkflow(request_id="s1", signal_name="approve"))
    _send_update(run, _update("late-item", "add_item", "late"), _waiter("c-2"))
    assert run.state.pending_updates[-1].behind == 1
    run.work(worker, first)
    second = run.task()
    assert second.task_id != first.task_id
    # The signal's task carries the update that came after it, not before.
    shown = run.history[second.first_event_id - 1 : second.last_event_id]
    assert any(isinstance(e, h.WorkflowExecutionSignaled) for e in shown)
    assert [x.update_id for x in second.updates] == ["late-item"]


def test_a_lost_task_sends_its_update_again_with_the_whole_history_and_it_is_taken_once() -> None:
    clock = Clock()
    run = Run(clock)
    sticky = _worker()
    _started_cart(run, sticky)
    _send_update(run, _update("u-1", "add_item", "pen"), _waiter("c-1"))
    lost = run.task()
    # The sticky worker took the update but its answer never came: the task times out.
    sticky.activate(lost, run.history[lost.first_event_id - 1 : lost.last_event_id])
    timeout = [
        e for e in run.sent if isinstance(e, o.CreateTimer) and e.notice.purpose == "workflow_task_timeout"
    ][-1]
    clock.now = timeout.fire_at
    run.send(timeout.notice)
    again = run.task()
    assert again.first_event_id == 1 and [x.update_id for x in again.updates] == ["u-1"]
    other = _worker("worker-2")
    done = run.work(other, again)
    assert [type(e) for e in done.events] == [
        h.WorkflowExecutionUpdateAccepted,
        h.WorkflowExecutionUpdateCompleted,
    ]
    late = m.WorkflowTaskCompleted(
        run_id=lost.run_id,
        task_id=lost.task_id,
        commands=[AcceptUpdate(update_id="u-1", update_name="add_item")],
    )
    assert run.send(late).ignored is not None  # the lost worker's answer is stale


def test_decisions_a_worker_cannot_have_made_fail_its_task_instead_of_being_recorded() -> None:
    run, worker = Run(), _worker()
    _started_cart(run, worker)
    _send_update(run, _update("u-1", "add_item", "pen"), _waiter("c-1"))
    task = run.task()
    forged = m.WorkflowTaskCompleted(
        run_id=task.run_id,
        task_id=task.task_id,
        commands=[
            AcceptUpdate(update_id="never-sent", update_name="add_item"),
            CompleteUpdate(update_id="never-sent"),
        ],
    )
    failed = run.send(forged)
    assert [type(e) for e in failed.events] == [h.WorkflowTaskFailed]
    assert "not carried by the task" in failed.events[0].message  # type: ignore[union-attr]
    assert run.state is not None and [p.update_id for p in run.state.pending_updates] == ["u-1"]
    # Once the corrected worker answers, the update goes through.
    retry = next(e for e in failed.outbox if isinstance(e, o.CreateTimer))
    run.clock.now = retry.fire_at
    run.send(retry.notice)
    recovered = run.work(_worker("worker-2"))
    assert [r.outcome for r in _replies(recovered)] == ["completed"]


def test_a_client_cannot_grow_a_runs_state_without_bound() -> None:
    run, worker = Run(), _worker()
    _started_cart(run, worker)
    assert run.state is not None
    run.send(m.SignalWorkflow(request_id="s", signal_name="approve"))
    run.work(worker)
    # Each checkout waits for its activity: the updates stay in progress.
    held = 0
    for i in range(MAX_UPDATES_IN_FLIGHT):
        _send_update(run, _update(f"co-{i}", "checkout", "ann"), _waiter(f"c-{i}"))
        held += 1
    assert len(run.state.pending_updates) + len(run.state.accepted_updates) == held
    refused = _send_update(run, _update("one-too-many", "add_item", "x"), _waiter("c-x"))
    (reply,) = _replies(refused)
    assert reply.outcome == "rejected" and reply.failure is not None
    assert reply.failure.type == "UpdateLimitExceeded" and "in progress" in reply.failure.message
    assert run.state.pending_update("one-too-many") is None
    # Inputs waiting for the code are bounded in bytes too.
    fresh, fresh_worker = Run(), _worker()
    _started_cart(fresh, fresh_worker)
    big = "x" * (MAX_PENDING_UPDATE_BYTES // 3)
    _send_update(fresh, _update("big-1", "add_item", big), _waiter("c-1"))
    _send_update(fresh, _update("big-2", "add_item", big), _waiter("c-2"))
    (too_big,) = _replies(_send_update(fresh, _update("big-3", "add_item", big), _waiter("c-3")))
    assert too_big.outcome == "rejected" and too_big.failure is not None
    assert too_big.failure.type == "UpdateLimitExceeded"
    # Waiters of one update are bounded; a client asking again replaces its own ask.
    for i in range(MAX_UPDATE_WAITERS + 5):
        _send_update(fresh, _update("big-1", "add_item", big), _waiter(f"w-{i}", queue=f"q-{i}"))
    _send_update(
        fresh, _update("big-1", "add_item", big), _waiter("again", queue=f"q-{MAX_UPDATE_WAITERS + 4}")
    )
    assert fresh.state is not None
    waiters = fresh.state.pending_updates[0].waiters
    assert len(waiters) == MAX_UPDATE_WAITERS and waiters[-1].correlation_id == "again"


def test_a_run_that_closes_answers_the_updates_it_did_not_take_or_finish() -> None:
    run, worker = Run(), _worker()
    _started_cart(run, worker)
    _send_update(run, _update("co", "checkout", "ann"), _waiter("c-1"))
    run.work(worker)  # taken: its handler waits for the approval
    _send_update(run, _update("u-2", "add_item", "pen"), _waiter("c-2"))  # not taken yet (task in flight)
    terminated = run.send(m.TerminateWorkflowRequest(request_id="t", reason="enough"))
    outcomes = {r.update_id: r for r in _replies(terminated)}
    assert outcomes["co"].outcome == "failed" and outcomes["co"].failure is not None
    assert outcomes["co"].failure.type == "AcceptedUpdateCompletedWorkflow"
    assert outcomes["u-2"].outcome == "run_closed" and outcomes["u-2"].run_status == "terminated"
    assert run.state is not None and not run.state.pending_updates and not run.state.accepted_updates


def test_the_state_rebuilt_from_a_history_with_updates_matches_the_live_one() -> None:
    run, worker = Run(), _worker()
    _started_cart(run, worker)
    _send_update(run, _update("u-1", "add_item", "pen"), _waiter("c-1"))
    run.work(worker)
    _send_update(run, _update("co", "checkout", "ann"), _waiter("c-2"))
    run.work(worker)
    live = run.state
    assert live is not None
    rebuilt = rebuild_state(run.history)
    assert rebuilt.completed_updates == live.completed_updates
    assert [(a.update_id, a.accepted_event_id) for a in rebuilt.accepted_updates] == [
        (a.update_id, a.accepted_event_id) for a in live.accepted_updates
    ]
    assert live.accepted_updates[0].waiters and not rebuilt.accepted_updates[0].waiters  # clients ask again


def test_a_worker_without_the_instance_replays_the_updates_and_issues_the_same_commands() -> None:
    run, sticky = Run(), _worker()
    _started_cart(run, sticky)
    _send_update(run, _update("u-1", "add_item", "pen"), _waiter("c-1"))
    run.work(sticky)
    _send_update(run, _update("co", "checkout", "ann"), _waiter("c-2"))
    run.work(sticky)
    run.send(m.SignalWorkflow(request_id="s", signal_name="approve"))
    task = run.task()
    events = run.history[task.first_event_id - 1 : task.last_event_id]
    by_sticky = sticky.activate(task, events).reply
    whole = task.model_copy(update={"first_event_id": 1, "sticky_queue": None})
    by_replay = _worker("worker-2").activate(whole, run.history[: task.last_event_id]).reply
    assert isinstance(by_sticky, m.WorkflowTaskCompleted) and isinstance(by_replay, m.WorkflowTaskCompleted)
    assert by_sticky.commands == by_replay.commands and by_sticky.commands  # the checkout's activity


# -- LocalEnvironment --------------------------------------------------------------------------------
@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    u.charged.clear()
    async with LocalEnvironment(u.app) as environment:
        yield environment


def _types(env: LocalEnvironment, workflow_id: str) -> list[str]:
    return [e["type"] for e in env.history(workflow_id)]


async def test_an_update_answers_its_handlers_result_and_is_recorded(env: LocalEnvironment) -> None:
    cart = await env.start_workflow(u.Cart.run, "c-1", id="cart")
    assert await cart.execute_update(u.Cart.add_item, "pen") == 1
    assert await cart.execute_update("add_item", "ink") == 2  # by name
    assert await cart.query(u.Cart.count) == 2
    assert (
        _types(env, "cart")[1:]
        == [
            "workflow_execution_update_accepted",
            "workflow_execution_update_completed",
        ]
        * 2
    )
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await cart.execute_update(u.Cart.failing, "out of stock")
    assert not failed.value.rejected and failed.value.update_name == "fail"
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "CartError"
    assert str(cause) == "out of stock"
    assert (await cart.describe()).status == "running"  # a failing update does not fail the run


async def test_a_validators_refusal_leaves_no_history(env: LocalEnvironment) -> None:
    cart = await env.start_workflow(u.Cart.run, "c-1", id="cart")
    before = env.history("cart")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await cart.execute_update(u.Cart.add_item, "")
    assert refused.value.rejected
    assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == "EmptyItem"
    with pytest.raises(WorkflowUpdateFailedError, match="refused") as unknown:
        await cart.execute_update("no_such_update")
    assert "the workflow handles: add_item, checkout, fail" in str(unknown.value.cause)
    assert env.history("cart") == before
    assert await cart.query(u.Cart.count) == 0
    billed = collections.Counter(r.metric for r in env.usage)
    assert billed["update"] == 2  # refused updates the code saw are billed, as Temporal Cloud does


async def test_wait_condition_activities_and_signals_work_inside_a_handler(env: LocalEnvironment) -> None:
    cart = await env.start_workflow(u.Cart.run, "c-1", id="cart")
    await cart.execute_update(u.Cart.add_item, "pen")
    checkout = await cart.start_update(u.Cart.checkout, "ann", id="checkout")
    assert checkout.id == "checkout" and checkout.workflow_id == "cart"
    await cart.signal(u.Cart.approve)
    assert await checkout.result() == "receipt-c-1-1 approved by ann"
    assert await cart.result() == ["pen"]
    # The handler's steps sit between its accepted and completed events, the signal among them.
    types = _types(env, "cart")
    accepted = types.index("workflow_execution_update_accepted", 3)
    assert types[accepted:] == [
        "workflow_execution_update_accepted",
        "workflow_execution_signaled",
        "activity_task_scheduled",
        "activity_task_started",
        "activity_task_completed",
        "workflow_execution_update_completed",
        "workflow_execution_completed",
    ]
    # The run closed with the checkout: no run takes another update.
    with pytest.raises(WorkflowNotFoundError):
        await cart.execute_update(u.Cart.add_item, "late")


async def test_an_update_id_sent_again_runs_the_handler_once(env: LocalEnvironment) -> None:
    cart = await env.start_workflow(u.Cart.run, "c-1", id="cart")
    started = await cart.start_update(u.Cart.checkout, "ann", id="co")
    # A caller that lost its answer asks again with the same id, before and after the handler finishes.
    again = await cart.start_update(u.Cart.checkout, "bob", id="co")
    await cart.signal(u.Cart.approve)
    assert await started.result() == "receipt-c-1-0 approved by ann"
    assert await again.result() == "receipt-c-1-0 approved by ann"
    assert await cart.execute_update(u.Cart.checkout, "carol", id="co") == "receipt-c-1-0 approved by ann"
    assert u.charged["c-1"] == 1
    assert _types(env, "cart").count("workflow_execution_update_accepted") == 1
    assert collections.Counter(r.metric for r in env.usage)["update"] == 1


async def test_the_run_waits_for_an_unfinished_handler_unless_it_may_be_abandoned(
    env: LocalEnvironment,
) -> None:
    held = await env.start_workflow(u.Holder.run, id="held")
    assert await held.execute_update(u.Holder.slow) == "slept"  # the hour's sleep takes no time
    assert await held.result() == "done"
    assert _types(env, "held")[-3:] == [
        "timer_fired",
        "workflow_execution_update_completed",
        "workflow_execution_completed",
    ]
    abandoned = await env.start_workflow(u.Holder.run, id="abandoned")
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await abandoned.execute_update(u.Holder.slow_abandoned)
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == "AcceptedUpdateCompletedWorkflow"
    assert await abandoned.result() == "done"
    assert "workflow_execution_update_completed" not in _types(env, "abandoned")


async def test_a_workflow_can_wait_for_its_handlers_itself(env: LocalEnvironment) -> None:
    drainer = await env.start_workflow(u.Drainer.run, id="drainer")
    assert await drainer.execute_update(u.Drainer.work) == "worked"
    assert await drainer.result() == "drained"


async def test_continue_as_new_waits_for_the_handlers_too(env: LocalEnvironment) -> None:
    chain = await env.start_workflow(u.Chain.run, 0, id="chain")
    assert await chain.execute_update(u.Chain.go_on) == 0
    first = env.history("chain", chain.run_id)
    assert [e["type"] for e in first][-2:] == [
        "workflow_execution_update_completed",
        "workflow_execution_continued_as_new",
    ]
    assert await chain.execute_update(u.Chain.go_on) == 1  # the next run takes the next update
    assert await chain.execute_update(u.Chain.go_on) == 2
    assert await chain.result() == 2


async def test_a_history_with_updates_replays_and_resumes(env: LocalEnvironment) -> None:
    cart = await env.start_workflow(u.Cart.run, "c-1", id="cart")
    await cart.execute_update(u.Cart.add_item, "pen")
    checkout = await cart.start_update(u.Cart.checkout, "ann", id="co")
    await cart.signal(u.Cart.approve)
    await checkout.result()
    history = env.history("cart")
    replay(u.app, history)  # the same code issues the same commands
    # A prefix that stops while the checkout waits for its activity resumes to the same result.
    cut = next(i for i, e in enumerate(history) if e["type"] == "activity_task_scheduled") + 1
    async with LocalEnvironment(u.app) as other:
        resumed = await other.resume(history[:cut])
        assert await resumed.result() == ["pen"]
        assert _types(other, "cart") == [e["type"] for e in history]
    # Code whose handler does something else at that point does not replay the history.
    changed = w.swapped(u.app, "Cart", ChangedCart)
    with pytest.raises(NonDeterminismError, match="complete update"):
        replay(changed, history)


class ChangedCart(u.Cart):
    @workflow.update
    def add_item(self, item: str) -> int:  # type: ignore[override]
        workflow.upsert_search_attributes({"Item": item})
        self.items.append(item)
        return len(self.items)


async def test_the_docs_update_example_runs() -> None:
    from examples.cart import CartWorkflow, app

    async with LocalEnvironment(app) as env:
        cart = await env.start_workflow(CartWorkflow.run, "c-1", id="cart-1")
        assert await cart.execute_update(CartWorkflow.add, "pen", 3) == 3
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await cart.execute_update(CartWorkflow.add, "ink", 0)
        assert refused.value.rejected and "a price must be positive" in str(refused.value.cause)
        checkout = await cart.start_update(CartWorkflow.checkout, id="checkout-cart-1")
        assert await checkout.result() == "receipt-c-1-3"
        assert await cart.result() == "receipt-c-1-3"
        assert [e["type"] for e in env.history("cart-1")].count("workflow_execution_update_accepted") == 2


def test_a_handler_with_a_bug_parks_the_run_and_its_update_waits_for_the_fix() -> None:
    run, worker = Run(), _worker()
    run.start("Fragile")
    run.work(worker)
    _send_update(run, _update("c", "crash"), _waiter("c-1"))
    failed = run.work(worker)
    assert [type(e) for e in failed.events] == [h.WorkflowTaskFailed]
    assert "a bug in the handler" in failed.events[0].message  # type: ignore[union-attr]
    assert not _replies(failed)  # nobody is told anything yet: the update was not taken
    assert run.state is not None and run.state.status == "blocked"
    assert [p.update_id for p in run.state.pending_updates] == ["c"]


def test_a_validator_may_record_nothing_and_is_refused_if_it_tries() -> None:
    run, worker = Run(), _worker()
    run.start("Fragile")
    run.work(worker)
    length = len(run.history)
    _send_update(run, _update("n", "noted"), _waiter("c-1"))
    (reply,) = _replies(run.work(worker))
    assert reply.outcome == "rejected" and reply.failure is not None
    assert reply.failure.type == "QueryIssuedCommands" and "validator" in reply.failure.message
    assert len(run.history) == length


def test_a_task_without_updates_reads_as_before_updates_existed() -> None:
    """Workers of an earlier version refuse fields they do not know: tasks that carry no update, and
    answers that refuse none, leave the fields out."""
    run, worker = Run(), _worker()
    run.start("Cart", "c-1")
    assert "updates" not in run.task().model_dump_json()
    reply = worker.activate(run.task(), run.history).reply
    assert reply is not None and "update_rejections" not in reply.model_dump_json()
    run.send(reply)
    _send_update(run, _update("u", "add_item", ""), _waiter("c-1"))
    assert '"updates":[{"update_id":"u"' in run.task().model_dump_json()
    refused = run.work(worker)
    assert [r.outcome for r in _replies(refused)] == ["rejected"]
