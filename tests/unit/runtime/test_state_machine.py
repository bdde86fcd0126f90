"""The execution state machine as pure code: messages in, events and outbox entries out; the code runs
in workers, reached through workflow tasks (here a worker's pure side, ``WorkflowActivations``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.commands import CompleteWorkflow, StartTimer
from perdure.platform.core.payloads import default_converter
from perdure.platform.core.run_state import RunState, rebuild_state
from perdure.platform.core.state_machine import ExecutionStateMachine, Transition
from perdure.platform.core.workflow_activations import WorkflowActivations

from . import workflows as w


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Run:
    """One run driven by hand: what the engine keeps of it (state, history, everything sent)."""

    def __init__(self, clock: Clock | None = None, unbilled: frozenset[str] = frozenset()) -> None:
        self.clock = clock or Clock()
        ids = iter(range(1000))
        self.machine = ExecutionStateMachine(
            clock=self.clock, new_id=lambda: f"run-{next(ids)}", unbilled_workflow_types=unbilled
        )
        self.history: list[h.HistoryEvent] = []
        self.sent: list[o.OutboxEntry] = []
        self.state: RunState | None = None

    def start(self, workflow_type: str, *args: object, signal: str | None = None) -> Transition:
        start = m.StartWorkflow(
            request_id="req",
            workflow_type=workflow_type,
            workflow_id="wf",
            input=default_converter.to_payloads(list(args)),
            signal_name=signal,
        )
        return self._take(self.machine.start("ns", start))

    def send(self, message: m.RunMessage) -> Transition:
        assert self.state is not None
        return self._take(self.machine.handle(self.state, message))

    def _take(self, transition: Transition) -> Transition:
        if transition.ignored is None:
            self.state = transition.state
            self.history.extend(transition.events)
            self.sent.extend(transition.outbox)
        return transition

    def task(self) -> o.DispatchWorkflowTask:
        return [e for e in self.sent if isinstance(e, o.DispatchWorkflowTask)][-1]

    def work(self, worker: WorkflowActivations, task: o.DispatchWorkflowTask | None = None) -> Transition:
        """The worker runs the latest workflow task (or ``task``) and its answer reaches the run."""
        task = task or self.task()
        outcome = worker.activate(task, self.history[task.first_event_id - 1 : task.last_event_id])
        assert outcome.reply is not None
        return self.send(outcome.reply)

    def result_of(self, scheduled_event_id: int, value: str = "x", attempt: int = 1) -> m.ActivityCompleted:
        assert self.state is not None
        return m.ActivityCompleted(
            run_id=self.state.run_id,
            scheduled_event_id=scheduled_event_id,
            attempt=attempt,
            result=default_converter.to_payload(value),
        )

    def dispatched(self, scheduled_event_id: int) -> o.DispatchActivity:
        return [
            e
            for e in self.sent
            if isinstance(e, o.DispatchActivity) and e.scheduled_event_id == scheduled_event_id
        ][-1]

    def finish(
        self, worker: WorkflowActivations, scheduled_event_id: int, value: str, at: datetime | None = None
    ) -> m.ActivityCompleted:
        """The activity's result as ``worker`` reports it: with the continuation it can give."""
        result = self.result_of(scheduled_event_id, value)
        at = at or self.clock.now
        continuation = worker.continue_after(self.dispatched(scheduled_event_id), result, at)
        return result.model_copy(update={"continuation": continuation})

    def run_to_close(self, worker: WorkflowActivations) -> None:
        """Answer every task and complete every activity (with continuations) until the run closes."""
        assert self.state is not None
        for _ in range(50):
            if not self.state.is_open:
                return
            if self.state.workflow_task is not None:
                self.work(worker)
                continue
            scheduled = min(self.state.pending_activities)
            self.clock.now += timedelta(seconds=1)
            self.send(self.finish(worker, scheduled, f"done-{scheduled}"))
        raise AssertionError("the run did not close")


def _worker(queue: str | None = "worker-1") -> WorkflowActivations:
    return WorkflowActivations(w.app, sticky_queue=queue)


def test_a_start_sends_the_code_a_workflow_task_and_records_its_commands() -> None:
    run = Run()
    started = run.start("ThreeSteps", "s")
    assert [type(e) for e in started.events] == [h.WorkflowExecutionStarted]
    task = run.task()
    assert (task.first_event_id, task.last_event_id, task.sticky_queue) == (1, 1, None)
    assert not any(isinstance(e, o.DispatchActivity) for e in started.outbox)
    assert any(
        isinstance(e, o.CreateTimer) and e.notice.purpose == "workflow_task_timeout" for e in started.outbox
    )
    completed = run.work(_worker())
    assert [e.event_id for e in completed.events] == [2]
    assert isinstance(completed.events[0], h.ActivityTaskScheduled)
    dispatch = [e for e in completed.outbox if isinstance(e, o.DispatchActivity)]
    assert len(dispatch) == 1 and dispatch[0].attempt == 1 and dispatch[0].scheduled_event_id == 2
    assert any(isinstance(e, o.CancelTimerEntry) for e in completed.outbox)  # the task's timeout
    assert run.state is not None and run.state.workflow_task is None
    assert run.state.sticky_queue == "worker-1" and run.state.next_event_id == 3


def test_the_workflow_types_the_billing_policy_leaves_out_record_no_usage() -> None:
    def usage_of(run: Run) -> list[str]:
        run.start("ThreeSteps", "s")
        run.run_to_close(_worker())
        return [r.metric for e in run.sent if isinstance(e, o.RecordUsage) for r in e.records]

    billed = usage_of(Run())
    assert "workflow_started" in billed and "activity_started" in billed
    assert usage_of(Run(unbilled=frozenset({"ThreeSteps"}))) == []
    assert usage_of(Run(unbilled=frozenset({"SomethingElse"}))) == billed


def test_a_redelivered_or_stale_message_changes_nothing() -> None:
    run = Run()
    run.start("ThreeSteps", "s")
    worker = _worker()
    task = run.task()
    run.work(worker)
    first = run.send(run.result_of(2, "s-1-done"))
    assert first.changed and isinstance(first.events[-1], h.ActivityTaskCompleted)
    run.work(worker)
    assert run.send(run.result_of(2, "s-1-done")).ignored is not None
    assert run.send(run.result_of(2).model_copy(update={"run_id": "someone-else"})).ignored is not None
    # The first task's completion, delivered again, is stale: its commands are not recorded twice.
    again = m.WorkflowTaskCompleted(run_id=task.run_id, task_id=task.task_id, commands=[])
    assert run.send(again).ignored is not None


def test_a_sticky_worker_is_sent_only_the_events_it_has_not_seen() -> None:
    run = Run()
    run.start("ThreeSteps", "s")
    worker = _worker()
    run.work(worker)
    for scheduled in (2, 5):
        run.send(run.result_of(scheduled))
        task = run.task()
        assert task.sticky_queue == "worker-1"
        # The command events of the last task (scheduled, started) and the new activation.
        assert task.first_event_id == scheduled and task.last_event_id == run.history[-1].event_id
        completed = run.work(worker)
        assert isinstance(completed.events[0], h.ActivityTaskScheduled)


def test_a_worker_without_the_instance_asks_for_the_whole_history_and_gets_the_same_commands() -> None:
    cached_run, cold_run = Run(), Run()
    for run in (cached_run, cold_run):
        run.start("ThreeSteps", "s")
        run.work(_worker())
        run.send(run.result_of(2, "s-1-done"))
    cached = cached_run.work(_worker())  # a new worker: the sticky task is a cache miss
    assert cached.ignored is None and not cached.events
    retry = cached_run.task()
    assert retry.first_event_id == 1 and retry.sticky_queue is None
    cold = cached_run.work(_worker("worker-2"))
    assert cached_run.state is not None and cached_run.state.sticky_queue == "worker-2"
    warm_worker = _worker()
    cold_run_again = Run()
    cold_run_again.start("ThreeSteps", "s")
    cold_run_again.work(warm_worker)
    cold_run_again.send(cold_run_again.result_of(2, "s-1-done"))
    warm = cold_run_again.work(warm_worker)
    assert [e.model_dump() for e in cold.events] == [e.model_dump() for e in warm.events]


def test_messages_wait_while_a_task_is_in_flight_and_each_activation_gets_its_own_task() -> None:
    run = Run()
    run.start("SignalsAndTimers")
    worker = _worker()
    for text in ("a", "b"):
        waiting = run.send(
            m.SignalWorkflow(request_id=text, signal_name="note", input=default_converter.to_payloads([text]))
        )
        assert not waiting.events  # the first task (the start) is still in flight
    assert run.state is not None and len(run.state.buffered) == 2
    run.work(worker)  # the start's commands, then the first signal
    run.work(worker)  # the first signal's (none), then the second
    run.work(worker)
    types = [e.type for e in run.history]
    assert types == [
        "workflow_execution_started",
        "timer_started",
        "workflow_execution_signaled",
        "workflow_execution_signaled",
    ]
    assert run.state.buffered == [] and run.state.workflow_task is None
    # The history replays event by event on a fresh worker.
    replayed = WorkflowActivations(w.app).replay(run.history)
    assert replayed.apply([]) == []


def test_signal_with_start_lets_the_code_start_before_it_sees_the_signal() -> None:
    run = Run()
    run.start("SignalsAndTimers", signal="proceed")
    worker = _worker()
    run.work(worker)
    run.work(worker)
    assert [e.type for e in run.history] == [
        "workflow_execution_started",
        "timer_started",
        "workflow_execution_signaled",
    ]


def test_a_slow_or_lost_worker_times_out_and_the_task_goes_to_any_worker_with_the_whole_history() -> None:
    clock = Clock()
    run = Run(clock)
    run.start("ThreeSteps", "s")
    worker = _worker()
    run.work(worker)
    run.send(run.result_of(2))
    sticky = run.task()
    timeout = next(
        e
        for e in run.sent
        if isinstance(e, o.CreateTimer)
        and e.notice.purpose == "workflow_task_timeout"
        and e.notice.event_id == 2
    )
    assert timeout.fire_at == clock.now + timedelta(seconds=5)  # sticky: sooner than the shared queue
    clock.now = timeout.fire_at
    run.send(timeout.notice)
    fallback = run.task()
    assert (
        fallback.first_event_id == 1 and fallback.sticky_queue is None and fallback.task_id != sticky.task_id
    )
    # The lost worker answers late: ignored, nothing recorded twice.
    late = worker.activate(sticky, run.history[sticky.first_event_id - 1 : sticky.last_event_id])
    assert late.reply is not None and run.send(late.reply).ignored is not None
    completed = run.work(_worker("worker-2"))
    assert [type(e) for e in completed.events] == [h.ActivityTaskScheduled]


def test_a_failing_task_parks_the_run_once_and_is_retried_with_backoff_until_it_succeeds() -> None:
    clock = Clock()
    run = Run(clock)
    run.start("Reordered")
    run.work(_worker())
    run.send(run.result_of(2, "A"))
    # A worker with reordered code: the history no longer replays.
    reordered = WorkflowActivations(w.swapped(w.app, "Reordered", w.ReorderedV2))
    run.work(reordered)  # a worker that never saw the run: it asks for the whole history
    failed = run.work(reordered)
    assert [type(e) for e in failed.events] == [h.WorkflowTaskFailed]
    assert run.state is not None and run.state.status == "blocked"
    retries = [
        e for e in failed.outbox if isinstance(e, o.CreateTimer) and e.notice.purpose == "workflow_task_retry"
    ]
    assert [r.fire_at - clock.now for r in retries] == [timedelta(seconds=1)]
    clock.now = retries[0].fire_at
    run.send(retries[0].notice)
    again = run.work(reordered)
    assert not again.events  # a repeated failure is not recorded again
    second = [
        e for e in again.outbox if isinstance(e, o.CreateTimer) and e.notice.purpose == "workflow_task_retry"
    ]
    assert [r.fire_at - clock.now for r in second] == [timedelta(seconds=2)]
    clock.now = second[0].fire_at
    run.send(second[0].notice)
    recovered = run.work(_worker())  # the corrected code is deployed
    assert [type(e) for e in recovered.events][:2] == [h.WorkflowTaskRedriven, h.ActivityTaskScheduled]
    assert run.state.status == "running" and run.state.task_failures == 0


def test_commands_a_worker_cannot_have_issued_fail_the_task_instead_of_being_recorded() -> None:
    run = Run()
    run.start("ThreeSteps", "s")
    task = run.task()
    forged = m.WorkflowTaskCompleted(
        run_id=task.run_id,
        task_id=task.task_id,
        commands=[CompleteWorkflow(result=None), StartTimer(seq=1, duration=timedelta(seconds=1))],
    )
    failed = run.send(forged)
    assert [type(e) for e in failed.events] == [h.WorkflowTaskFailed]
    assert "follows the command that closes" in failed.events[0].message  # type: ignore[union-attr]
    assert run.state is not None and run.state.is_open


def test_a_query_waits_for_the_task_in_flight_and_otherwise_goes_to_the_sticky_worker() -> None:
    run = Run()
    run.start("SignalsAndTimers")
    worker = _worker()
    query = m.PendingQuery(request_id="q1", query_name="seen", reply_to="reply", correlation_id="c1")
    assert run.state is not None
    waiting = run.machine.query(run.state, query)
    assert waiting.state.pending_queries == [query] and not waiting.outbox
    run._take(waiting)
    run.send(
        m.SignalWorkflow(request_id="s", signal_name="note", input=default_converter.to_payloads(["hi"]))
    )
    run.work(worker)
    carried = run.task()
    assert carried.queries == [query]  # with the task that shows the code the signal
    outcome = worker.activate(carried, run.history[carried.first_event_id - 1 : carried.last_event_id])
    answer = default_converter.from_payload(outcome.answers[0].result, list[str])  # type: ignore[arg-type]
    assert answer[-1] == "signal:hi"
    assert outcome.reply is not None
    run.send(outcome.reply)
    direct = run.machine.query(run.state, query.model_copy(update={"request_id": "q2"}))
    task = next(e for e in direct.outbox if isinstance(e, o.DispatchWorkflowTask))
    assert task.sticky_queue == "worker-1" and not task.task_id
    assert task.first_event_id == task.last_event_id + 1  # no events: the instance is up to date
    assert worker.activate(task, []).answers[0].result is not None


def test_timeouts_and_retries_are_durable_timers() -> None:
    clock = Clock()
    run = Run(clock)
    run.start("StartToClose", "t")
    started = run.work(_worker())
    timer = next(
        e for e in started.outbox if isinstance(e, o.CreateTimer) and e.notice.purpose == "start_to_close"
    )
    assert timer.fire_at == clock.now + timedelta(seconds=0.2)
    clock.now = timer.fire_at
    timed_out = run.send(timer.notice)
    retry = next(e for e in timed_out.outbox if isinstance(e, o.CreateTimer))
    assert retry.notice.purpose == "activity_retry" and retry.notice.attempt == 2
    assert retry.fire_at == clock.now + timedelta(seconds=1)
    assert not any(isinstance(e, o.DispatchActivity) for e in timed_out.outbox)
    clock.now = retry.fire_at
    redispatched = run.send(retry.notice)
    dispatch = [e for e in redispatched.outbox if isinstance(e, o.DispatchActivity)]
    assert [d.attempt for d in dispatch] == [2]
    # The first attempt's late result no longer counts.
    assert run.send(run.result_of(2)).ignored is not None


def test_rebuilt_state_matches_the_live_state() -> None:
    run = Run()
    run.start("SignalsAndTimers")
    run.work(_worker())
    run.send(
        m.SignalWorkflow(request_id="s1", signal_name="note", input=default_converter.to_payloads(["hi"]))
    )
    run.work(_worker())
    rebuilt = rebuild_state(run.history)
    live = run.state
    assert live is not None
    assert rebuilt.next_event_id == live.next_event_id
    assert rebuilt.pending_timers == live.pending_timers
    assert {k: v for k, v in live.armed_timers.items() if "workflow_task" not in k} == rebuilt.armed_timers
    assert rebuilt.recent_request_ids == live.recent_request_ids


def test_a_parked_runs_retry_lost_with_its_worker_is_sent_again() -> None:
    clock = Clock()
    run = Run(clock)
    run.start("Reordered")
    run.work(_worker())
    run.send(run.result_of(2, "A"))
    reordered = WorkflowActivations(w.swapped(w.app, "Reordered", w.ReorderedV2))
    run.work(reordered)  # cache miss: the whole history next
    run.work(reordered)  # fails: parked, retry armed
    retry = [
        e for e in run.sent if isinstance(e, o.CreateTimer) and e.notice.purpose == "workflow_task_retry"
    ][-1]
    clock.now = retry.fire_at
    run.send(retry.notice)
    lost = run.task()
    timeout = [
        e for e in run.sent if isinstance(e, o.CreateTimer) and e.notice.purpose == "workflow_task_timeout"
    ][-1]
    clock.now = timeout.fire_at
    run.send(timeout.notice)  # the worker holding the retry died
    again = run.task()
    assert again.task_id != lost.task_id and again.first_event_id == 1
    recovered = run.work(_worker())
    assert run.state is not None and run.state.status == "running"
    assert isinstance(recovered.events[0], h.WorkflowTaskRedriven)


def test_what_the_platform_reports_is_never_dropped_however_many_signals_wait() -> None:
    from perdure.platform.core.state_machine import MAX_BUFFERED_SIGNALS

    run = Run()
    run.start("ThreeSteps", "s")
    run.work(_worker())
    run.send(run.result_of(2))  # a task is in flight from here on
    for i in range(MAX_BUFFERED_SIGNALS):
        run.send(m.SignalWorkflow(request_id=f"s{i}", signal_name="none"))
    refused = run.send(m.SignalWorkflow(request_id="one-too-many", signal_name="none"))
    assert refused.ignored is not None and "limit" in refused.ignored
    timer = m.TimerFiredNotice(run_id="run-0", timer_key="k", purpose="user_timer", event_id=99)
    assert run.send(timer).ignored is None  # waits with the others
    assert run.state is not None and run.state.buffered[-1] == timer


def test_queries_waiting_when_the_run_closes_go_out_with_the_whole_history() -> None:
    run = Run()
    run.start("SignalsAndTimers")
    query = m.PendingQuery(request_id="q", query_name="seen", reply_to="r", correlation_id="c")
    assert run.state is not None
    run._take(run.machine.query(run.state, query))
    run.send(m.TerminateWorkflowRequest(request_id="t", reason="enough"))
    task = run.task()
    assert task.queries == [query] and task.first_event_id == 1 and not task.task_id
    assert run.state.pending_queries == []
    outcome = _worker().activate(task, run.history)
    assert outcome.answers[0].result is not None


def test_a_worker_holding_the_instance_goes_on_past_a_result_without_a_workflow_task() -> None:
    clock = Clock()
    run = Run(clock)
    run.start("ThreeSteps", "s")
    worker = _worker()
    run.work(worker)
    clock.now += timedelta(seconds=3)
    worker_time = clock.now - timedelta(milliseconds=20)  # the worker's clock, a little behind
    message = run.finish(worker, 2, "s-1-done", at=worker_time)
    assert message.continuation is not None
    assert (message.continuation.first_event_id, message.continuation.last_event_id) == (2, 4)
    went_on = run.send(message)
    # The result and the command it led to are recorded at once; no workflow task goes out.
    assert [type(e) for e in went_on.events] == [
        h.ActivityTaskStarted,
        h.ActivityTaskCompleted,
        h.ActivityTaskScheduled,
    ]
    assert went_on.events[1].timestamp == worker_time  # the time the code saw
    assert not any(isinstance(e, o.DispatchWorkflowTask) for e in went_on.outbox)
    assert [e.scheduled_event_id for e in went_on.outbox if isinstance(e, o.DispatchActivity)] == [5]
    assert run.state is not None
    assert run.state.worker_seen_event_id == 4 and run.state.workflow_task is None
    run.send(run.finish(worker, 5, "s-2-done"))
    closed = run.send(run.finish(worker, 8, "s-3-done"))
    assert isinstance(closed.events[-1], h.WorkflowExecutionCompleted) and not run.state.is_open
    assert default_converter.from_payload(closed.events[-1].result) == ["s-1-done", "s-2-done", "s-3-done"]
    assert [e.event_id for e in run.history] == list(range(1, len(run.history) + 1))


def test_a_history_recorded_through_continuations_replays_to_the_same_result() -> None:
    run = Run()
    run.start("Timestamped", "t")
    run.run_to_close(_worker())
    tasks = [e for e in run.sent if isinstance(e, o.DispatchWorkflowTask)]
    assert len(tasks) == 1  # only the start needed one: every result was continued at the worker
    closing = run.history[-1]
    assert isinstance(closing, h.WorkflowExecutionCompleted)
    # A fresh worker replays the whole history to the very commands the live run issued.
    replayed = _worker("worker-2").replay(run.history[:-1]).apply([])
    assert [type(c) for c in replayed] == [CompleteWorkflow]
    assert replayed[0].result == closing.result
    live = default_converter.from_payload(closing.result)
    # The code saw the times of the results it was continued at, as the history keeps them.
    completions = [e.timestamp.isoformat() for e in run.history if isinstance(e, h.ActivityTaskCompleted)]
    assert [live[1], live[3], live[5]] == completions and len(set(completions)) == 3


def test_a_continuation_whose_history_moved_on_is_refused_and_the_task_goes_out_as_usual() -> None:
    run = Run()
    run.start("ThreeSteps", "s")
    worker = _worker()
    run.work(worker)
    result = run.finish(worker, 2, "s-1-done")  # the worker went on past event 3 ...
    assert result.continuation is not None
    run.send(m.SignalWorkflow(request_id="sig", signal_name="unhandled"))  # ... but event 3 is a signal
    sticky = run.task()
    assert sticky.sticky_queue == "worker-1" and sticky.first_event_id == 2
    assert run.send(result).changed  # waits for the task in flight
    # The sticky worker's instance went further than the history: it asks for the whole history.
    cache_miss = worker.activate(sticky, run.history[sticky.first_event_id - 1 : sticky.last_event_id])
    assert isinstance(cache_miss.reply, m.WorkflowTaskFailed) and cache_miss.reply.cause == "cache_miss"
    run.send(cache_miss.reply)
    assert run.state is not None and run.state.sticky_queue is None
    run.run_to_close(worker)
    closing = run.history[-1]
    assert isinstance(closing, h.WorkflowExecutionCompleted)
    assert default_converter.from_payload(closing.result) == ["s-1-done", "done-6", "done-9"]
    completions = [e for e in run.history if isinstance(e, h.ActivityTaskCompleted)]
    assert [e.scheduled_event_id for e in completions] == [2, 6, 9]  # each result recorded once


def test_continuations_the_history_cannot_have_are_refused() -> None:
    def prepared() -> tuple[Run, WorkflowActivations, m.ActivityCompleted]:
        run = Run()
        run.start("ThreeSteps", "s")
        worker = _worker()
        run.work(worker)
        message = run.finish(worker, 2, "s-1-done")
        assert message.continuation is not None
        return run, worker, message

    def changed(message: m.ActivityCompleted, **fields: object) -> m.ActivityCompleted:
        assert message.continuation is not None
        return message.model_copy(update={"continuation": message.continuation.model_copy(update=fields)})

    run, _, message = prepared()
    refusals = {
        "a clock too far ahead": changed(message, completed_at=run.clock.now + timedelta(minutes=5)),
        "a time before the activity was scheduled": changed(
            message, completed_at=run.clock.now - timedelta(minutes=5)
        ),
        "events the run does not have": changed(message, first_event_id=1),
        "a count of events the run does not have": changed(message, last_event_id=7),
        "commands sharing a sequence number": changed(
            message,
            commands=[*message.continuation.commands] * 2,  # type: ignore[union-attr]
        ),
    }
    for reason, refused in refusals.items():
        run, _, _ = prepared()
        went = run.send(refused)
        assert [type(e) for e in went.events] == [h.ActivityTaskStarted, h.ActivityTaskCompleted], reason
        task = run.task()
        # The result is kept; its task goes out with the whole history (that worker went further).
        assert task.first_event_id == 1 and task.sticky_queue is None, reason
    # Another worker's claim to the run changes nothing of where the run's instance is.
    run, _, message = prepared()
    went = run.send(changed(message, sticky_queue="worker-9"))
    assert not any(isinstance(e, h.ActivityTaskScheduled) for e in went.events)
    assert run.task().sticky_queue == "worker-1"


def test_a_worker_continues_only_results_whose_events_it_can_know() -> None:
    run = Run()
    run.start("ThreeSteps", "s")
    worker = _worker()
    run.work(worker)
    dispatched = run.dispatched(2)
    result = run.result_of(2, "s-1-done")
    # A later attempt (the engine recorded a retry in between), or a worker without the instance.
    later = dispatched.model_copy(update={"attempt": 2})
    assert worker.continue_after(later, result.model_copy(update={"attempt": 2}), run.clock.now) is None
    assert _worker("worker-2").continue_after(dispatched, result, run.clock.now) is None
    # Once a workflow task moved the instance on, its earlier commands' results are no longer known.
    continuation = worker.continue_after(dispatched, result, run.clock.now)
    assert continuation is not None
    assert worker.continue_after(dispatched, result, run.clock.now) is None  # nor twice
