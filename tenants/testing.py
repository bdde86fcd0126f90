"""Local testing for tenants: the whole platform in one process, with time skipping and replay.

``LocalEnvironment(app)`` is a ``WorkflowClient``, as a real ``Client`` is (``start_workflow``,
``execute_workflow``, ``signal_with_start``, ``get_workflow_handle`` and the handle's ``result``,
``signal``, ``query``, ``execute_update``, ``start_update``, ``cancel``, ``terminate``, ``describe``,
``reset``), so a test switches between them by one line. Starts follow the engine's rules
(``decide_start``), and updates and resets the state machine's. While something awaits a result (or
an update's answer) and nothing else is runnable, the clock jumps to the next timer: a one-hour sleep
takes no time.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, cast

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.activity_invocation import invoke_activity
from perdure.platform.core.definitions import (
    QUERY_MARK,
    SIGNAL_MARK,
    WorkflowRegistry,
    handler_name_of,
    update_name_of,
    workflow_name_of,
)
from perdure.platform.core.failures import ApplicationError, NonDeterminismError
from perdure.platform.core.payloads import DataConverter, Payload, default_converter
from perdure.platform.core.reset import ResetRefused, reset_run_id, reset_target
from perdure.platform.core.run_state import RunLimits, RunState
from perdure.platform.core.start_rules import (
    AnswerWithRun,
    IdReusePolicy,
    RefuseStart,
    SignalRun,
    StartNewRun,
    decide_start,
    fresh_run_id,
    open_run_of,
)
from perdure.platform.core.state_machine import ExecutionStateMachine, Transition
from perdure.platform.core.usage import UsageRecord, query_usage
from perdure.platform.core.visibility_query import AttributeType
from perdure.platform.core.workflow_activations import QueryAnswer, WorkflowActivations
from perdure.tenants import local_visibility
from perdure.tenants.client_errors import (
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
    WorkflowResetError,
)
from perdure.tenants.run_outcome import run_outcome
from perdure.tenants.update_outcome import update_outcome
from perdure.tenants.workflow_client import (
    QueryType,
    ReturnType,
    UpdateRef,
    UpdateType,
    WorkflowClient,
    WorkflowDescription,
    WorkflowRef,
)

# Where the environment's own update callers wait (the engine's answers name it as their reply queue).
_LOCAL_REPLIES = "local"
# How many times an update is sent on to the next run of a chain that continued as new before taking it.
_CONTINUED_RUNS_FOLLOWED = 10


@dataclass
class _Run:
    state: RunState
    history: list[h.HistoryEvent]
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class LocalEnvironment(WorkflowClient):
    def __init__(
        self,
        app: WorkflowRegistry,
        *,
        namespace: str = "default",
        converter: DataConverter = default_converter,
        start_time: datetime | None = None,
        limits: RunLimits | None = None,
        search_attributes: dict[str, AttributeType] | None = None,
    ) -> None:
        self.app = app
        # The search attributes queries may name, as a namespace registers them (docs/visibility.md).
        self.search_attributes = dict(search_attributes or {})
        self.namespace = namespace
        self.converter = converter
        self._base = start_time or datetime.now(UTC)
        self._skipped = timedelta(0)
        self._started_at_monotonic: float | None = None
        run_limits = limits or RunLimits()
        self.machine = ExecutionStateMachine(
            clock=self.now, new_id=lambda: str(uuid.uuid4()), limits_of=lambda namespace: run_limits
        )
        # The environment's own worker: workflow tasks are run in this process, as soon as they are sent.
        self.activations = WorkflowActivations(app, converter, sticky_queue="local", identity="local")
        self._queries: dict[str, asyncio.Future[QueryAnswer]] = {}
        self._update_replies: dict[str, asyncio.Future[o.UpdateReply]] = {}
        self._runs: dict[str, list[_Run]] = {}
        self._by_run_id: dict[str, _Run] = {}
        self._queue: collections.deque[tuple[str | None, str | None, Any]] = collections.deque()
        self._timers: list[tuple[datetime, int, str]] = []
        self._armed: dict[str, tuple[datetime, m.TimerFiredNotice]] = {}
        self._counter = itertools.count()
        self._activity_tasks: set[asyncio.Task[None]] = set()
        # The billable actions the runs recorded, as the cell would send them to metering.
        self.usage: list[UsageRecord] = []
        self._waiters = 0
        self._wakeup: asyncio.Event | None = None
        self._queue_empty: asyncio.Event | None = None
        self._driver: asyncio.Task[None] | None = None
        self._closed = False
        self._driver_error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def __aenter__(self) -> LocalEnvironment:
        self._ensure_driver()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        self._closed = True
        for task in [*self._activity_tasks, *([self._driver] if self._driver else [])]:
            task.cancel()
        await asyncio.gather(
            *self._activity_tasks, *([self._driver] if self._driver else []), return_exceptions=True
        )

    def _ensure_driver(self) -> None:
        if self._driver is None:
            loop = asyncio.get_running_loop()
            self._started_at_monotonic = loop.time()
            self._wakeup = asyncio.Event()
            self._queue_empty = asyncio.Event()
            self._driver = loop.create_task(self._drive(), name="perdure-local-environment")

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def now(self) -> datetime:
        """The environment's clock: real time since it started, plus every skipped interval."""
        elapsed = 0.0
        if self._started_at_monotonic is not None:
            elapsed = asyncio.get_running_loop().time() - self._started_at_monotonic
        return self._base + timedelta(seconds=elapsed) + self._skipped

    # -- the client's methods ---------------------------------------------------------------------------
    async def start_workflow(
        self,
        workflow: WorkflowRef[ReturnType],
        *args: Any,
        id: str,
        id_reuse_policy: IdReusePolicy = "allow_duplicate",
        execution_timeout: timedelta | None = None,
        request_id: str | None = None,
    ) -> LocalWorkflowHandle[ReturnType]:
        self._ensure_driver()
        name = workflow_name_of(workflow)
        self.app.get_workflow(name)  # an unknown type is refused here, as the client's admission does
        start = m.StartWorkflow(
            request_id=request_id or str(uuid.uuid4()),
            workflow_type=name,
            workflow_id=id,
            input=self.converter.to_payloads(list(args), "workflow input"),
            execution_timeout=execution_timeout,
        )
        return LocalWorkflowHandle(self, id, self._start(start, id_reuse_policy).run_id)

    async def signal_with_start(
        self,
        workflow: WorkflowRef[ReturnType],
        *args: Any,
        id: str,
        signal: Callable[..., Any] | str,
        signal_args: Sequence[Any] = (),
        execution_timeout: timedelta | None = None,
    ) -> LocalWorkflowHandle[ReturnType]:
        self._ensure_driver()
        name = workflow_name_of(workflow)
        self.app.get_workflow(name)
        start = m.StartWorkflow(
            request_id=str(uuid.uuid4()),
            workflow_type=name,
            workflow_id=id,
            input=self.converter.to_payloads(list(args), "workflow input"),
            execution_timeout=execution_timeout,
            signal_name=handler_name_of(signal, SIGNAL_MARK),
            signal_input=self.converter.to_payloads(list(signal_args), "signal input"),
        )
        decision = self._start(start, "allow_duplicate")
        if isinstance(decision, SignalRun):
            await self.drained()  # the run takes the signal in before this returns, as a signal's does
        return LocalWorkflowHandle(self, id, decision.run_id)

    async def drained(self) -> None:
        """Return once every queued message has been applied."""
        self._ensure_driver()
        assert self._queue_empty is not None
        while self._queue:
            self._queue_empty.clear()
            self._wake()
            await self._queue_empty.wait()

    async def idle(self) -> None:
        """Return once every queued message is applied and every running activity has reported back
        (timers still pending are not waited for)."""
        self._ensure_driver()
        while self._queue or self._activity_tasks:
            if self._activity_tasks:
                await asyncio.wait(list(self._activity_tasks))
            await asyncio.sleep(0)

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> LocalWorkflowHandle[Any]:
        run = self._by_run_id.get(run_id) if run_id else self._latest(workflow_id)
        if run is None:
            raise WorkflowNotFoundError(f"no workflow {workflow_id!r}" + (f" run {run_id}" if run_id else ""))
        return LocalWorkflowHandle(self, workflow_id, run.state.run_id)

    async def list_workflows(
        self,
        status: str | None = None,
        type: str | None = None,
        *,
        query: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        if query is not None and (status is not None or type is not None):
            raise ValueError("list by a query or by status and type, not both (a query says both)")
        states = [run.state for run in self._by_run_id.values()]
        return local_visibility.list_runs(
            states, self.search_attributes, status=status, workflow_type=type, query=query, limit=limit
        )

    async def count_workflows(self, query: str = "") -> int:
        states = [run.state for run in self._by_run_id.values()]
        return local_visibility.count_runs(states, self.search_attributes, query)

    def get_workflow_handle_for(
        self, workflow: WorkflowRef[ReturnType], workflow_id: str, run_id: str | None = None
    ) -> LocalWorkflowHandle[ReturnType]:
        # The result decodes by the run's registered type, whatever names it here.
        return self.get_workflow_handle(workflow_id, run_id)

    def history(self, workflow_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """The run's history as JSON-serialisable data (the latest run unless ``run_id`` is given)."""
        return h.history_to_json(self._run(workflow_id, run_id).history)

    async def resume(
        self, history: Sequence[dict[str, Any]] | Sequence[h.HistoryEvent]
    ) -> LocalWorkflowHandle[Any]:
        """Continue a run from a recorded history prefix, as a cell does after a crash."""
        self._ensure_driver()
        events = _events(history)
        transition = self.machine.recover(events)
        state = transition.state
        existing = self._latest(state.workflow_id)
        if existing is not None and existing.state.is_open:
            raise WorkflowAlreadyStartedError(state.workflow_id, existing.state.run_id)
        run = _Run(state=state, history=list(events))
        self._register(run)
        self._commit(run, transition)
        return LocalWorkflowHandle(self, state.workflow_id, state.run_id)

    def _reset(self, workflow_id: str, run_id: str | None, reset: m.ResetWorkflow) -> str:
        """Reset a run as the cell's engine does (docs/reset.md); the new run's id."""
        new_run_id = reset_run_id(self.namespace, workflow_id, reset.request_id)
        if new_run_id in self._by_run_id:
            return new_run_id  # the same reset again
        target = self._run(workflow_id, run_id)
        if target.state.workflow_id != workflow_id:
            raise WorkflowNotFoundError(f"no run {run_id} of workflow {workflow_id!r}")
        latest = self._latest(workflow_id)
        # The engine's rule (and decide_start's): a run that continued as new is open until its next run
        # starts, so resetting it would leave that next run and the new one both open.
        open_run = open_run_of(latest.state) if latest is not None else None
        if latest is not None and open_run is not None and open_run != target.state.run_id:
            if open_run != latest.state.run_id:
                raise WorkflowResetError(
                    f"run {latest.state.run_id} of workflow {workflow_id!r} continued as new into run "
                    f"{open_run}, which is starting: reset run {open_run} once it started, or terminate it"
                )
            raise WorkflowResetError(
                f"run {target.state.run_id} is not the current run of workflow {workflow_id!r}, and the "
                f"current one ({open_run}) is open: reset that one, or terminate it first"
            )
        try:
            transitions = self.machine.reset(target.state, target.history, reset, new_run_id)
        except ResetRefused as exc:
            raise WorkflowResetError(str(exc)) from None
        run = _Run(state=transitions.new_run.state, history=[])
        self._register(run)
        self._commit(run, transitions.new_run)
        self._commit(target, transitions.old_run)
        return new_run_id

    # -- the engine ------------------------------------------------------------------------------------
    def _latest(self, workflow_id: str) -> _Run | None:
        runs = self._runs.get(workflow_id)
        return runs[-1] if runs else None

    def _run(self, workflow_id: str, run_id: str | None = None) -> _Run:
        run = self._by_run_id.get(run_id) if run_id else self._latest(workflow_id)
        if run is None:
            raise WorkflowNotFoundError(f"no workflow {workflow_id!r}")
        return run

    def _register(self, run: _Run) -> None:
        self._runs.setdefault(run.state.workflow_id, []).append(run)
        self._by_run_id[run.state.run_id] = run

    def _start(
        self, start: m.StartWorkflow, policy: IdReusePolicy, run_id: str | None = None
    ) -> StartNewRun | AnswerWithRun | SignalRun:
        """Apply ``start`` as the engine does, and say what it did; raises ``WorkflowAlreadyStartedError``
        if it is refused."""
        run_id = run_id or fresh_run_id(self.namespace, start.workflow_id, start.request_id)
        latest = self._latest(start.workflow_id)
        decision = decide_start(
            latest.state if latest is not None else None,
            start,
            policy,
            run_id=run_id,
            applied_before=run_id in self._by_run_id,
        )
        match decision:
            case AnswerWithRun():
                return decision
            case SignalRun():
                # By run id: the next run of a chain that continued as new starts before this is applied.
                self._enqueue(None, decision.run_id, decision.signal)
                return decision
            case RefuseStart():
                raise WorkflowAlreadyStartedError(start.workflow_id, decision.run_id, decision.reason)
        transition = self.machine.start(self.namespace, start, run_id=run_id)
        run = _Run(state=transition.state, history=[])
        self._register(run)
        self._commit(run, transition)
        return decision

    def _commit(self, run: _Run, transition: Transition) -> None:
        if transition.ignored is not None:
            return
        run.state = transition.state
        run.history.extend(transition.events)
        for entry in transition.outbox:
            self._send(run, entry)
        if not run.state.is_open:
            run.closed.set()
        self._wake()

    def _send(self, run: _Run, entry: o.OutboxEntry) -> None:
        match entry:
            case o.DispatchActivity():
                task = asyncio.get_running_loop().create_task(self._run_activity(entry))
                self._activity_tasks.add(task)
                task.add_done_callback(self._activity_tasks.discard)
            case o.CreateTimer():
                self._armed[entry.timer_key] = (entry.fire_at, entry.notice)
                heapq.heappush(self._timers, (entry.fire_at, next(self._counter), entry.timer_key))
            case o.CancelTimerEntry():
                self._armed.pop(entry.timer_key, None)
            case o.StartRun():
                self._queue.append((None, None, entry))
            case o.CancelRun():
                self._queue.append((entry.workflow_id, None, entry.request()))
            case o.NotifyParent():
                self._queue.append((None, entry.parent.run_id, entry.message))
            case o.RecordUsage():
                self.usage.extend(entry.records)
            case o.DispatchWorkflowTask():
                self._run_workflow_task(entry)
            case o.UpdateReply():
                for waiter in entry.waiters:
                    waiting = self._update_replies.get(waiter.correlation_id or "")
                    if waiter.reply_to == _LOCAL_REPLIES and waiting is not None and not waiting.done():
                        waiting.set_result(entry)
            case o.CancelActivityTask() | o.RunClosed():
                pass

    def _run_workflow_task(self, task: o.DispatchWorkflowTask) -> None:
        run = self._by_run_id[task.run_id]
        outcome = self.activations.activate(task, run.history[task.first_event_id - 1 : task.last_event_id])
        for answer in outcome.answers:
            waiting = self._queries.pop(answer.query.request_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(answer)
        if outcome.reply is not None:
            # Its completion comes back first, as the worker's answer would while nothing else is sent.
            self._queue.appendleft((None, task.run_id, outcome.reply))
            self._wake()

    def _deliver(self, workflow_id: str | None, run_id: str | None, message: Any) -> None:
        if isinstance(message, o.StartRun):
            self._start_from_outbox(message)
            return
        run = self._by_run_id.get(run_id) if run_id else (self._latest(workflow_id) if workflow_id else None)
        if run is None:
            return
        self._commit(run, self.machine.handle(run.state, message))

    def _start_from_outbox(self, entry: o.StartRun) -> None:
        start = entry.start
        # A child's parent hears whether it started; the next run of a continue-as-new chain is no child.
        parent = start.parent if start.continued_from_run_id is None else None
        notice: m.ChildStarted | m.ChildStartFailed
        try:
            run_id = self._start(start, "allow_duplicate", entry.run_id).run_id
        except WorkflowAlreadyStartedError as exc:
            if parent is None:
                return
            notice = m.ChildStartFailed(
                run_id=parent.run_id, initiated_event_id=parent.initiated_event_id, cause=str(exc)
            )
        else:
            if parent is None:
                return
            notice = m.ChildStarted(
                run_id=parent.run_id,
                initiated_event_id=parent.initiated_event_id,
                child_run_id=run_id,
            )
        self._queue.append((None, parent.run_id, notice))

    async def _run_activity(self, task: o.DispatchActivity) -> None:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        self._queue.append(
            (
                None,
                task.run_id,
                m.ActivityStarted(
                    run_id=task.run_id,
                    scheduled_event_id=task.scheduled_event_id,
                    attempt=task.attempt,
                    identity="local",
                ),
            )
        )
        self._wake()

        sequence = itertools.count(1)

        def heartbeat(details: list[Payload]) -> None:
            notice = m.ActivityHeartbeat(
                run_id=task.run_id,
                scheduled_event_id=task.scheduled_event_id,
                attempt=task.attempt,
                details=details,
                sequence=next(sequence),
            )
            if threading.get_ident() == loop_thread:
                self._enqueue(None, task.run_id, notice)  # keeps its order before the attempt's outcome
            else:
                loop.call_soon_threadsafe(self._enqueue, None, task.run_id, notice)

        outcome = await invoke_activity(task, self.app, self.converter, heartbeat)
        self._enqueue(None, task.run_id, outcome)

    def _enqueue(self, workflow_id: str | None, run_id: str | None, message: Any) -> None:
        self._queue.append((workflow_id, run_id, message))
        self._wake()

    def _fire_due_timers(self) -> bool:
        fired = False
        now = self.now()
        while self._timers and self._timers[0][0] <= now:
            fire_at, _, key = heapq.heappop(self._timers)
            # A key armed again (an attempt's timeout moves from dispatch to start) leaves its earlier
            # entry in the heap: only the entry of the current arming fires.
            if self._is_current(fire_at, key):
                notice = self._armed.pop(key)[1]
                self._queue.append((None, notice.run_id, notice))
                fired = True
        return fired

    def _is_current(self, fire_at: datetime, key: str) -> bool:
        armed = self._armed.get(key)
        return armed is not None and armed[0] == fire_at

    def _next_timer(self) -> datetime | None:
        while self._timers and not self._is_current(self._timers[0][0], self._timers[0][2]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def _drive(self) -> None:
        assert self._wakeup is not None
        try:
            while not self._closed:
                if self._queue:
                    self._deliver(*self._queue.popleft())
                    await asyncio.sleep(0)
                    continue
                self._queue_empty.set()  # type: ignore[union-attr]
                if self._fire_due_timers():
                    continue
                next_fire = self._next_timer()
                if self._awaited() and not self._activity_tasks and next_fire is not None:
                    self._skipped += next_fire - self.now()  # time skipping: nothing else can happen first
                    continue
                self._wakeup.clear()
                delay = None if next_fire is None else max(0.0, (next_fire - self.now()).total_seconds())
                try:
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                except TimeoutError:
                    pass
        except BaseException as exc:
            self._driver_error = exc
            for runs in self._runs.values():
                for run in runs:
                    run.closed.set()
            raise

    def _awaited(self) -> bool:
        """Whether a caller waits for something only the runs' progress brings: a result, or an update's
        answer (counted until the answer is there, not until its caller resumes: time must not jump
        in between)."""
        return bool(self._waiters) or any(not f.done() for f in self._update_replies.values())

    async def _await_reply(
        self, reply: asyncio.Future[o.UpdateReply], timeout: float | None
    ) -> o.UpdateReply:
        """Wait for an update's answer (time skips meanwhile, as for ``result()``)."""
        self._wake()
        assert self._driver is not None
        either: list[asyncio.Future[Any]] = [reply, self._driver]
        await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if reply.done():
            return reply.result()
        if self._driver.done():
            raise RuntimeError("the local environment's engine failed") from self._driver_error
        raise TimeoutError(f"no answer to the update within {timeout} s")

    async def _wait_closed(self, run: _Run, timeout: float | None) -> None:
        self._waiters += 1
        self._wake()
        try:
            await asyncio.wait_for(run.closed.wait(), timeout)
        finally:
            self._waiters -= 1
        if self._driver_error is not None and not isinstance(self._driver_error, asyncio.CancelledError):
            raise RuntimeError("the local environment's engine failed") from self._driver_error


class LocalWorkflowHandle(Generic[ReturnType]):
    """A ``WorkflowHandle`` of a ``LocalEnvironment``."""

    def __init__(self, env: LocalEnvironment, workflow_id: str, run_id: str) -> None:
        self.env = env
        self.id = workflow_id
        self.run_id = run_id

    async def result(self, timeout: float | None = None) -> ReturnType:
        """The workflow's result, following continue-as-new; raises ``WorkflowFailureError`` otherwise."""
        run = self.env._by_run_id[self.run_id]
        await self.env._wait_closed(run, timeout)
        # Follow the run that went on in this one's place: continued as new, or terminated by a reset.
        while run.state.new_run_id and run.state.status in ("continued_as_new", "terminated"):
            await self.env.drained()  # the next run's start is queued behind the close
            run = self.env._by_run_id[run.state.new_run_id or ""]
            await self.env._wait_closed(run, timeout)
        state = run.state
        type_hint = self.env.app.get_workflow(state.workflow_type).run.return_type
        outcome = run_outcome(
            self.id, state.status, state.result, state.failure, self.env.converter, type_hint
        )
        return cast(ReturnType, outcome)  # decoded into the run method's return type

    async def signal(self, signal: Callable[..., Any] | str, *args: Any) -> None:
        self.env._ensure_driver()
        message = m.SignalWorkflow(
            request_id=str(uuid.uuid4()),
            signal_name=handler_name_of(signal, SIGNAL_MARK),
            input=self.env.converter.to_payloads(list(args), "signal input"),
        )
        self._require_open()
        self.env._enqueue(self.id, None, message)
        await self._settle()

    async def query(self, query: Callable[..., QueryType] | str, *args: Any) -> QueryType:
        await self._settle()
        run = self.env._latest(self.id)
        assert run is not None
        name = handler_name_of(query, QUERY_MARK)
        message = m.QueryWorkflow(
            request_id=str(uuid.uuid4()),
            query_name=name,
            input=self.env.converter.to_payloads(list(args), "query input"),
        )
        pending = m.PendingQuery(
            request_id=message.request_id, query_name=message.query_name, input=message.input
        )
        answered = asyncio.get_running_loop().create_future()
        self.env._queries[pending.request_id] = answered
        self.env._commit(run, self.env.machine.query(run.state, pending))
        answer: QueryAnswer = await answered
        if answer.error is not None:
            raise ApplicationError(answer.error, type=answer.failure_type)
        assert answer.result is not None
        payload = answer.result
        self.env.usage.append(query_usage(run.state.namespace, message.request_id, self.env.now()))
        hint = self.env.app.get_workflow(run.state.workflow_type).queries[name].return_type
        return cast(QueryType, self.env.converter.from_payload(payload, hint))

    async def execute_update(
        self, update: UpdateRef[UpdateType], *args: Any, id: str | None = None, timeout: float | None = None
    ) -> UpdateType:
        name = update_name_of(update)
        input = self.env.converter.to_payloads(list(args), "update input")
        update_id = id or str(uuid.uuid4())
        reply = await self._send_update(update_id, name, input, "completed", timeout)
        return cast(UpdateType, self._outcome(update_id, name, reply))

    async def start_update(
        self, update: UpdateRef[UpdateType], *args: Any, id: str | None = None, timeout: float | None = None
    ) -> LocalWorkflowUpdateHandle[UpdateType]:
        name = update_name_of(update)
        input = self.env.converter.to_payloads(list(args), "update input")
        update_id = id or str(uuid.uuid4())
        reply = await self._send_update(update_id, name, input, "accepted", timeout)
        if reply.outcome in ("rejected", "run_closed"):
            self._outcome(update_id, name, reply)  # raises: the run did not take it
        return LocalWorkflowUpdateHandle(self, update_id, name, input, reply)

    async def _send_update(
        self,
        update_id: str,
        name: str,
        input: list[Payload],
        wait_for: m.UpdateStage,
        timeout: float | None,
    ) -> o.UpdateReply:
        """Send the update to the latest run, as the engine takes it, and wait for the answer it waits
        for; an update the run left to its next run (it continued as new first) is sent on to it."""
        env = self.env
        env._ensure_driver()
        async with asyncio.timeout(timeout):
            for _ in range(_CONTINUED_RUNS_FOLLOWED):
                await self._settle()
                run = env._latest(self.id)
                if run is None:
                    raise WorkflowNotFoundError(f"no workflow {self.id!r}")
                correlation = str(uuid.uuid4())
                answered: asyncio.Future[o.UpdateReply] = asyncio.get_running_loop().create_future()
                env._update_replies[correlation] = answered
                try:
                    waiter = m.UpdateWaiter(
                        reply_to=_LOCAL_REPLIES, correlation_id=correlation, wait_for=wait_for
                    )
                    message = m.UpdateWorkflow(
                        update_id=update_id, update_name=name, input=input, wait_for=wait_for
                    )
                    env._commit(run, env.machine.update(run.state, message, waiter, run.history))
                    reply = await env._await_reply(answered, None)
                finally:
                    env._update_replies.pop(correlation, None)
                if reply.outcome == "run_closed" and reply.run_status == "continued_as_new":
                    continue
                return reply
        raise WorkflowNotFoundError(f"workflow {self.id!r} kept continuing as new without taking the update")

    def _outcome(self, update_id: str, name: str, reply: o.UpdateReply) -> Any:
        run = self.env._by_run_id.get(reply.run_id)
        definition = self.env.app.get_workflow(run.state.workflow_type) if run else None
        update = definition.updates.get(name) if definition else None
        hint = update.handler.return_type if update is not None else Any
        return update_outcome(
            self.id,
            update_id,
            name,
            reply.outcome,
            reply.result,
            reply.failure,
            reply.message,
            self.env.converter,
            hint,
        )

    async def cancel(self, reason: str = "") -> None:
        self._require_open()
        self.env._enqueue(self.id, None, m.CancelWorkflowRequest(request_id=str(uuid.uuid4()), reason=reason))
        await self._settle()

    async def terminate(self, reason: str = "") -> None:
        self._require_open()
        self.env._enqueue(
            self.id, None, m.TerminateWorkflowRequest(request_id=str(uuid.uuid4()), reason=reason)
        )
        await self._settle()

    async def reset(
        self,
        to: int | str = "last-workflow-task",
        *,
        reason: str = "",
        reapply_signals: bool = True,
        run_id: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """See ``WorkflowHandle.reset``."""
        try:
            target = reset_target(to)
        except ResetRefused as exc:
            raise WorkflowResetError(str(exc)) from None
        self.env._ensure_driver()
        await self._settle()
        reset = m.ResetWorkflow(
            request_id=request_id or str(uuid.uuid4()),
            to=target,
            reason=reason,
            reapply_signals=reapply_signals,
        )
        self.run_id = self.env._reset(self.id, run_id, reset)
        await self._settle()
        return self.run_id

    async def describe(self, *, run_id: str | None = None) -> WorkflowDescription:
        """The workflow's latest run (or its run ``run_id``)."""
        await self._settle()
        state = self.env._run(self.id, run_id).state
        return WorkflowDescription(
            workflow_id=state.workflow_id,
            run_id=state.run_id,
            workflow_type=state.workflow_type,
            status=state.status,
            start_time=state.start_time,
            close_time=state.close_time,
            history_length=state.next_event_id - 1,
            pending_activities=len(state.pending_activities),
            pending_timers=len(state.pending_timers),
            blocked_reason=state.blocked_reason,
            search_attributes=dict(state.search_attributes),
            new_run_id=state.new_run_id,
            reset_run_id=state.reset_run_id,
            reset_from_run_id=state.reset_from_run_id,
            reset_point=state.reset_point,
        )

    def _require_open(self) -> None:
        run = self.env._latest(self.id)
        if run is None or not run.state.is_open:
            raise WorkflowNotFoundError(f"workflow {self.id!r} is not running")

    async def _settle(self) -> None:
        # Let the engine take in what is queued, so callers observe the effect of what they sent.
        await self.env.drained()


class LocalWorkflowUpdateHandle(Generic[UpdateType]):
    """A ``WorkflowUpdateHandle`` of a ``LocalEnvironment``: asking for the result sends the update again
    under its id, which the run answers with its outcome (or once it has one)."""

    def __init__(
        self,
        handle: LocalWorkflowHandle[Any],
        update_id: str,
        name: str,
        input: list[Payload],
        reply: o.UpdateReply,
    ) -> None:
        self._handle = handle
        self.id = update_id
        self.workflow_id = handle.id
        self._name = name
        self._input = input
        self._finished = reply if reply.outcome != "accepted" else None

    async def result(self, timeout: float | None = None) -> UpdateType:
        reply = self._finished or await self._handle._send_update(
            self.id, self._name, self._input, "completed", timeout
        )
        self._finished = reply
        return cast(UpdateType, self._handle._outcome(self.id, self._name, reply))


def _events(history: Sequence[dict[str, Any]] | Sequence[h.HistoryEvent]) -> list[h.HistoryEvent]:
    events = [e if not isinstance(e, dict) else h.event_from_json(e) for e in history]
    h.check_contiguous(events)
    return events


def replay(
    app: WorkflowRegistry,
    history: Sequence[dict[str, Any]] | Sequence[h.HistoryEvent],
    converter: DataConverter = default_converter,
) -> None:
    """Check that the app's current code replays ``history``; raises ``NonDeterminismError`` if not."""
    events = _events(history)
    instance = WorkflowActivations(app, converter).replay(events)
    leftover = instance.apply([])
    closed = any(h.is_close_event(e) for e in events)
    if leftover and closed:
        raise NonDeterminismError(None, "the end of the history", leftover[0].describe())
