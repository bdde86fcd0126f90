"""A live workflow run: the tenant's workflow object driven on a deterministic loop by history events.

``apply(events)`` is the only way in, for replay and for live progress alike: activation events are
fed to the code one at a time (running it until it blocks), command events are matched, in order,
against the commands the code issued. Whatever the code issued beyond the given events is returned as
new commands; the state machine records them as events and applies those, which matches them. Because
one code path serves both, a live run and its replay cannot drift apart.

Updates come after a task's events (``apply(events, updates)``): each is validated, then taken (an
``AcceptUpdate`` command, and its handler starts) or refused (``take_rejections``, no command). A
replay that meets an update's accepted event with nothing left to match starts the handler there, as
the live run did after validating it.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import hashlib
import random
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core.commands import (
    CLOSE_COMMANDS,
    AcceptUpdate,
    CancelTimer,
    CancelWorkflow,
    Command,
    CompleteUpdate,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordMarker,
    RequestCancelActivity,
    RequestCancelChild,
    ScheduleActivity,
    StartChildWorkflow,
    StartTimer,
    UpsertSearchAttributes,
    describe_event,
)
from perdure.platform.core.definitions import HandlerDefinition, UpdateDefinition, WorkflowDefinition
from perdure.platform.core.determinism_guard import DeterminismGuard, Unguarded
from perdure.platform.core.deterministic_loop import DeterministicLoop
from perdure.platform.core.failures import (
    ActivityError,
    ApplicationError,
    CancellationError,
    ChildWorkflowError,
    Failure,
    FailureError,
    NonDeterminismError,
    NondeterministicCallError,
    TimedOutError,
    exception_from_failure,
    failure_from_exception,
)
from perdure.platform.core.payloads import DataConverter, Payload, PayloadTooLargeError
from perdure.platform.core.visibility_plan import check_attribute_name, check_attribute_value

_current: contextvars.ContextVar[WorkflowInstance | None] = contextvars.ContextVar(
    "perdure_workflow", default=None
)


def current_instance() -> WorkflowInstance:
    instance = _current.get()
    if instance is None:
        raise RuntimeError("not in workflow code: this call is only valid inside a workflow run")
    return instance


def in_workflow() -> bool:
    return _current.get() is not None


@dataclass(frozen=True)
class WorkflowInfo:
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    first_run_id: str
    continued_from_run_id: str | None
    parent: h.ParentRef | None
    start_time: datetime
    attempt: int


class ContinueAsNewRequest(BaseException):
    """Raised by ``workflow.continue_as_new``; a BaseException so ``except Exception`` cannot swallow it."""

    def __init__(self, workflow_type: str, args: Sequence[Any], execution_timeout: timedelta | None) -> None:
        super().__init__("continue as new")
        self.workflow_type = workflow_type
        self.arguments = list(args)
        self.execution_timeout = execution_timeout


class WorkflowTaskError(Exception):
    """The workflow code crashed (not a deliberate failure): the run is parked, not failed."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.stack_trace = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))[
            -8000:
        ]


@dataclass
class _PendingResult:
    future: asyncio.Future[Any]
    hint: Any
    description: str


@dataclass
class _TakenUpdate:
    definition: UpdateDefinition
    handler: asyncio.Task[None]


class WorkflowInstance:
    def __init__(
        self, definition: WorkflowDefinition, started: h.WorkflowExecutionStarted, converter: DataConverter
    ):
        self.definition = definition
        self.converter = converter
        self.info = WorkflowInfo(
            namespace=started.namespace,
            workflow_id=started.workflow_id,
            run_id=started.run_id,
            workflow_type=started.workflow_type,
            first_run_id=started.first_run_id or started.run_id,
            continued_from_run_id=started.continued_from_run_id,
            parent=started.parent,
            start_time=started.timestamp,
            attempt=started.attempt,
        )
        self.loop = DeterministicLoop()  # type: ignore[abstract]  # I/O methods stay unimplemented on purpose
        self.now: datetime = started.timestamp
        # A run made by a reset replays the prefix it copied with the randomness it was recorded with
        # (and reseeds where a reset event follows an activation: ``_reseed_at_reset``).
        self.random = random.Random(_seed(started.original_run_id or started.run_id))
        self.cancel_requested = False
        self.closed = False
        self._started = started
        self._seq = 0
        self._pending: collections.deque[Command] = collections.deque()
        self._closing = False
        self._querying = False
        self.search_attributes: dict[str, h.SearchAttributeValue] = {}
        self._lenient = False
        # Signals a reset carried over, still to come: they follow its reset event, before the commands
        # the code issued for the reset point's activation and for them (one workflow task took them all).
        self._carried = 0
        self._activities: dict[int, _PendingResult] = {}
        self._timers: dict[int, _PendingResult] = {}
        self._children: dict[int, _PendingResult] = {}
        self._seq_by_event: dict[int, int] = {}
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._task_failure: BaseException | None = None
        self._patches: dict[str, bool] = {}
        self._batch: Sequence[h.HistoryEvent] = ()
        self._cursor = 0
        self._main: asyncio.Task[None] | None = None
        self._object: Any = None
        # Updates taken by this instance (their handlers, running or done), and those it refused since
        # its last task's answer.
        self._updates: dict[str, _TakenUpdate] = {}
        self._rejections: list[m.UpdateRejection] = []
        self.events_applied = 0

    # -- feeding events ---------------------------------------------------------------------------
    def apply(self, events: Sequence[h.HistoryEvent], updates: Sequence[m.UpdateInput] = ()) -> list[Command]:
        """Apply events in order, then offer the code ``updates``; return the commands the code issued
        that no given event records (what it refused: ``take_rejections``)."""
        token = _current.set(self)
        self._batch = events
        try:
            for index, event in enumerate(events):
                self._cursor = index
                self._apply_one(event)
                self.events_applied += 1
            self._batch = ()
            for update in updates:
                self._offer_update(update)
        finally:
            self._batch = ()
            _current.reset(token)
        return list(self._pending)

    def take_rejections(self) -> list[m.UpdateRejection]:
        """The updates refused since the last call (reported with the task's commands)."""
        rejections, self._rejections = self._rejections, []
        return rejections

    def _apply_one(self, event: h.HistoryEvent) -> None:
        if isinstance(event, h.WorkflowExecutionUpdateAccepted) and not self._pending:
            self._replay_update(event)
        elif isinstance(event, h.COMMAND_EVENTS):
            self._match(event)
        elif isinstance(event, h.WorkflowExecutionStarted):
            self.now = event.timestamp
            self._reseed_at_reset()
            self._main = self.loop.create_task(self._run_main(), name="workflow-main")
            self._run()
        elif isinstance(event, h.ACTIVATION_EVENTS):
            carried = self._carried > 0 and isinstance(event, h.WorkflowExecutionSignaled)
            if self._pending and not self._lenient and not carried:
                raise NonDeterminismError(event.event_id, describe_event(event), self._pending[0].describe())
            self._carried = self._carried - 1 if carried else 0
            self.now = event.timestamp
            self._reseed_at_reset()
            self._activate(event)
            self._run()
        elif isinstance(event, h.WorkflowExecutionReset):
            self._carried = event.reapplied_signals
        elif isinstance(event, h.WorkflowTaskFailed):
            # Commands of the activations before this were never recorded: carry them to the end.
            self._lenient = True
        elif isinstance(event, h.WorkflowExecutionTerminated | h.WorkflowExecutionTimedOut):
            self.closed = True
        # Other informational events do not concern the code.

    def _reseed_at_reset(self) -> None:
        """Before the code takes the activation at the cursor: if a reset event follows it, this is the
        reset point, where the code decides again; it draws new randomness from here on (seeded by the
        run the reset made, as recorded in the event, so every replay draws the same). A reset event is
        always written with the activation before it, so both are in one task's events."""
        following = self._cursor + 1
        if following < len(self._batch):
            event = self._batch[following]
            if isinstance(event, h.WorkflowExecutionReset) and event.new_run_id:
                self.random = random.Random(_seed(event.new_run_id))

    def _match(self, event: h.HistoryEvent) -> None:
        if not self._pending:
            raise NonDeterminismError(event.event_id, describe_event(event), "no command")
        command = self._pending[0]
        if not command.matches(event):
            raise NonDeterminismError(event.event_id, describe_event(event), command.describe())
        self._pending.popleft()
        if isinstance(
            event, h.ActivityTaskScheduled | h.TimerStarted | h.StartChildWorkflowExecutionInitiated
        ):
            self._seq_by_event[event.event_id] = event.seq
        if h.is_close_event(event):
            self.closed = True

    def _activate(self, event: h.HistoryEvent) -> None:
        match event:
            case h.ActivityTaskCompleted():
                pending = self._resolve(self._activities, event.scheduled_event_id)
                if pending is not None:
                    value = self.converter.from_payload(event.result, pending.hint) if event.result else None
                    pending.future.set_result(value)
            case h.ActivityTaskFailed():
                pending = self._resolve(self._activities, event.scheduled_event_id)
                if pending is not None:
                    pending.future.set_exception(
                        self._activity_error(
                            pending, event, exception_from_failure(event.failure, self.converter)
                        )
                    )
            case h.ActivityTaskTimedOut():
                pending = self._resolve(self._activities, event.scheduled_event_id)
                if pending is not None:
                    cause = TimedOutError(
                        f"activity timed out ({event.timeout_type})", timeout_type=event.timeout_type
                    )
                    if event.last_failure is not None:
                        cause.__cause__ = exception_from_failure(event.last_failure, self.converter)
                    pending.future.set_exception(self._activity_error(pending, event, cause))
            case h.TimerFired():
                pending = self._resolve(self._timers, event.started_event_id)
                if pending is not None:
                    pending.future.set_result(None)
            case h.ChildWorkflowExecutionClosed():
                pending = self._resolve(self._children, event.initiated_event_id)
                if pending is not None:
                    if event.outcome == "completed":
                        value = (
                            self.converter.from_payload(event.result, pending.hint) if event.result else None
                        )
                        pending.future.set_result(value)
                    else:
                        error = ChildWorkflowError(
                            f"child workflow {event.outcome}",
                            workflow_type=pending.description,
                            workflow_id="",
                        )
                        if event.failure is not None:
                            error.__cause__ = exception_from_failure(event.failure, self.converter)
                        elif event.outcome == "canceled":
                            error.__cause__ = CancellationError("child workflow cancelled")
                        pending.future.set_exception(error)
            case h.StartChildWorkflowExecutionFailed():
                pending = self._resolve(self._children, event.initiated_event_id)
                if pending is not None:
                    error = ChildWorkflowError(
                        f"child workflow could not start: {event.cause}",
                        workflow_type=pending.description,
                        workflow_id="",
                    )
                    error.__cause__ = ApplicationError(
                        event.cause, type="WorkflowAlreadyStarted", non_retryable=True
                    )
                    pending.future.set_exception(error)
            case h.WorkflowExecutionSignaled():
                self._deliver_signal(event)
            case h.WorkflowExecutionCancelRequested():
                if not self.cancel_requested:
                    self.cancel_requested = True
                    if self._main is not None and not self._main.done():
                        self._main.cancel()

    def awaits_activity(self, scheduled_event_id: int, activity_type: str) -> bool:
        """Whether the code waits for the result of the activity its history scheduled at that event."""
        seq = self._seq_by_event.get(scheduled_event_id)
        pending = self._activities.get(seq) if seq is not None else None
        return pending is not None and not pending.future.done() and pending.description == activity_type

    def _resolve(self, table: dict[int, _PendingResult], event_id: int) -> _PendingResult | None:
        seq = self._seq_by_event.pop(event_id, None)
        if seq is None:
            return None
        pending = table.pop(seq, None)
        if pending is None or pending.future.done():
            return None
        return pending

    def _activity_error(self, pending: _PendingResult, event: Any, cause: BaseException) -> ActivityError:
        error = ActivityError(
            f"activity {pending.description!r} failed",
            activity_type=pending.description,
            scheduled_event_id=event.scheduled_event_id,
            attempt=getattr(event, "attempt", None),
        )
        error.__cause__ = cause
        return error

    # -- running the code ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self.loop.run_until_quiescent()
            if self._task_failure is not None:
                failure, self._task_failure = self._task_failure, None
                raise WorkflowTaskError(failure)
            if not self._check_conditions():
                break

    def _check_conditions(self) -> bool:
        progressed = False
        with DeterminismGuard():
            for condition, future in list(self._conditions):
                if future.done():
                    self._conditions.remove((condition, future))
                    continue
                try:
                    satisfied = condition()
                except BaseException as exc:
                    raise WorkflowTaskError(exc) from exc
                if satisfied:
                    self._conditions.remove((condition, future))
                    future.set_result(None)
                    progressed = True
        return progressed

    async def _run_main(self) -> None:
        try:
            self._object = self.definition.cls()
            args = self.converter.from_payloads(self._started.input, self.definition.run.param_types)
            try:
                result = await getattr(self._object, self.definition.run.method_name)(*args)
            except ContinueAsNewRequest as request:
                await self._handlers_finished()
                self._emit(
                    ContinueAsNew(
                        workflow_type=request.workflow_type,
                        input=self.converter.to_payloads(request.arguments, "continue-as-new input"),
                        execution_timeout=request.execution_timeout,
                    )
                )
                return
            await self._handlers_finished()
            try:
                payload = self.converter.to_payload(result, "workflow result")
            except PayloadTooLargeError as exc:
                raise ApplicationError(str(exc), type="PayloadTooLargeError", non_retryable=True) from None
            self._emit(CompleteWorkflow(result=payload))
        except asyncio.CancelledError:
            self._emit(CancelWorkflow())
        except (NonDeterminismError, NondeterministicCallError) as exc:
            self._task_failure = exc
        except PayloadTooLargeError as exc:
            failure = failure_from_exception(
                ApplicationError(str(exc), type="PayloadTooLargeError", non_retryable=True), self.converter
            )
            self._emit(FailWorkflow(failure=failure))
        except FailureError as exc:
            if self.cancel_requested and isinstance(exc.__cause__, CancellationError):
                self._emit(CancelWorkflow())
            else:
                self._emit(FailWorkflow(failure=failure_from_exception(exc, self.converter)))
        except Exception as exc:
            self._task_failure = exc

    def _deliver_signal(self, event: h.WorkflowExecutionSignaled) -> None:
        handler = self.definition.signals.get(event.signal_name)
        if handler is None:
            return  # Temporal drops signals without a handler; the event stays in history for ops.
        args = self.converter.from_payloads(event.input, handler.param_types)
        self.loop.create_task(self._run_signal(handler, args), name=f"signal-{event.signal_name}")

    async def _run_signal(self, handler: HandlerDefinition, args: list[Any]) -> None:
        try:
            outcome = getattr(self._object, handler.method_name)(*args)
            if handler.is_async:
                await outcome
        except asyncio.CancelledError:
            pass
        except ApplicationError as exc:
            self._emit(FailWorkflow(failure=failure_from_exception(exc, self.converter)))
        except Exception as exc:
            self._task_failure = exc

    # -- updates ------------------------------------------------------------------------------------
    def _offer_update(self, update: m.UpdateInput) -> None:
        """Validate an update the engine sent with this task, then take it (its handler starts at once)
        or refuse it. An update the code has taken before is not taken twice; one that comes while the
        run closes is left undecided (the engine tells its callers the run closed before taking it)."""
        if update.update_id in self._updates or self._closing or self.closed:
            return
        definition = self.definition.updates.get(update.update_name)
        if definition is None:
            known = ", ".join(sorted(self.definition.updates)) or "none"
            reason = f"unknown update {update.update_name!r}; the workflow handles: {known}"
            self._refuse(update, reason, "UnknownUpdate")
            return
        if self._object is None:
            self._refuse(update, "the workflow has not started yet", "UpdateNotReady")
            return
        try:
            args = self.converter.from_payloads(update.input, definition.handler.param_types)
        except Exception as exc:
            self._refuse(update, f"the update's input does not decode: {exc}", type(exc).__name__)
            return
        if definition.validator is not None:
            try:
                self._validate(definition, args)
            except Exception as exc:
                failure = failure_from_exception(exc, self.converter)
                self._rejections.append(m.UpdateRejection(update_id=update.update_id, failure=failure))
                return
        self._emit(AcceptUpdate(update_id=update.update_id, update_name=update.update_name))
        self._start_update(update.update_id, definition, args)
        self._run()

    def _refuse(self, update: m.UpdateInput, message: str, failure_type: str) -> None:
        failure = Failure(kind="application", message=message, type=failure_type, non_retryable=True)
        self._rejections.append(m.UpdateRejection(update_id=update.update_id, failure=failure))

    def _validate(self, definition: UpdateDefinition, args: list[Any]) -> None:
        """Run the update's validator as a query runs: it may read the workflow's state, record nothing,
        and leaves the seeded random stream as it found it (a refusal must leave no trace)."""
        assert definition.validator is not None
        random_state = self.random.getstate()
        self._querying = True
        try:
            with DeterminismGuard():
                definition.validator(self._object, *args)
        finally:
            self._querying = False
            self.random.setstate(random_state)

    def _replay_update(self, event: h.WorkflowExecutionUpdateAccepted) -> None:
        """The history took an update here: run its handler, as the live run did once its validator let
        it in (the validator is not run again)."""
        definition = self.definition.updates.get(event.update_name)
        if definition is None:
            raise NonDeterminismError(event.event_id, describe_event(event), "no handler of that update")
        args = self.converter.from_payloads(event.input, definition.handler.param_types)
        self._start_update(event.update_id, definition, args)
        self._run()

    def _start_update(self, update_id: str, definition: UpdateDefinition, args: list[Any]) -> None:
        handler = self.loop.create_task(
            self._run_update(update_id, definition.handler, args), name=f"update-{definition.handler.name}"
        )
        self._updates[update_id] = _TakenUpdate(definition, handler)

    async def _run_update(self, update_id: str, handler: HandlerDefinition, args: list[Any]) -> None:
        try:
            outcome = getattr(self._object, handler.method_name)(*args)
            if handler.is_async:
                outcome = await outcome
            try:
                payload = self.converter.to_payload(outcome, "update result")
            except PayloadTooLargeError as exc:
                raise ApplicationError(str(exc), type="PayloadTooLargeError", non_retryable=True) from None
            self._emit(CompleteUpdate(update_id=update_id, result=payload))
        except asyncio.CancelledError:
            failure = failure_from_exception(CancellationError("update handler cancelled"), self.converter)
            self._emit(CompleteUpdate(update_id=update_id, failure=failure))
        except (NonDeterminismError, NondeterministicCallError) as exc:
            self._task_failure = exc
        except FailureError as exc:
            # A deliberate failure fails the update (its caller gets it), not the run.
            failure = failure_from_exception(exc, self.converter)
            self._emit(CompleteUpdate(update_id=update_id, failure=failure))
        except Exception as exc:
            self._task_failure = exc  # a bug: the run is parked until the code is fixed

    def all_handlers_finished(self) -> bool:
        return all(taken.handler.done() for taken in self._updates.values())

    async def _handlers_finished(self) -> None:
        """Hold the run's completion until its taken updates finish (those that may be abandoned aside)."""

        def finished() -> bool:
            return all(
                taken.handler.done()
                for taken in self._updates.values()
                if taken.definition.unfinished_policy == "wait"
            )

        if not finished():
            await self.wait_for(finished)

    def query(self, name: str, args: Sequence[Payload]) -> Payload:
        handler = self.definition.queries.get(name)
        if handler is None:
            known = ", ".join(sorted(self.definition.queries)) or "none"
            raise ApplicationError(
                f"unknown query {name!r}; the workflow answers: {known}", type="UnknownQuery"
            )
        if self._object is None:
            raise ApplicationError("the workflow has not started yet", type="QueryNotReady")
        decoded = self.converter.from_payloads(args, handler.param_types)
        # The live instance goes on serving the run: a handler must leave no trace in it, so anything
        # that would record (commands, markers) is refused and the seeded random stream is restored.
        token = _current.set(self)
        random_state = self.random.getstate()
        self._querying = True
        try:
            with DeterminismGuard():
                value = getattr(self._object, handler.method_name)(*decoded)
        except ApplicationError:
            raise
        except Exception as exc:
            raise ApplicationError(f"query {name!r} failed: {exc!r}", type="QueryFailed") from exc
        finally:
            self._querying = False
            self.random.setstate(random_state)
            _current.reset(token)
        return self.converter.to_payload(value, "query result")

    def _refuse_in_query(self) -> None:
        if self._querying:
            raise ApplicationError(
                "a query (or an update's validator) must not issue commands or record anything",
                type="QueryIssuedCommands",
            )

    # -- what workflow code calls (through perdure.tenants.workflow) --------------------------------
    def _emit(self, command: Command) -> None:
        self._refuse_in_query()
        if self._closing:
            return  # Nothing may follow a close; later commands of other tasks are dropped.
        if isinstance(command, CLOSE_COMMANDS):
            self._closing = True
        self._pending.append(command)

    def next_seq(self) -> int:
        self._refuse_in_query()
        self._seq += 1
        return self._seq

    def schedule_activity(
        self, activity_type: str, args: Sequence[Any], options: h.ActivityOptions, return_hint: Any
    ) -> asyncio.Future[Any]:
        seq = self.next_seq()
        future = self.loop.create_future()
        self._activities[seq] = _PendingResult(future, return_hint, activity_type)
        payloads = self.converter.to_payloads(list(args), f"input of activity {activity_type!r}")
        self._emit(ScheduleActivity(seq=seq, activity_type=activity_type, input=payloads, options=options))
        future.add_done_callback(
            lambda f: self._on_cancel(f, self._activities, seq, RequestCancelActivity(activity_seq=seq))
        )
        return future

    def start_timer(self, duration: timedelta) -> asyncio.Future[None]:
        seq = self.next_seq()
        future: asyncio.Future[None] = self.loop.create_future()
        self._timers[seq] = _PendingResult(future, None, "timer")
        self._emit(StartTimer(seq=seq, duration=duration))
        future.add_done_callback(lambda f: self._on_cancel(f, self._timers, seq, CancelTimer(timer_seq=seq)))
        return future

    def start_child(
        self,
        workflow_type: str,
        workflow_id: str,
        args: Sequence[Any],
        execution_timeout: timedelta | None,
        return_hint: Any,
    ) -> asyncio.Future[Any]:
        seq = self.next_seq()
        future = self.loop.create_future()
        self._children[seq] = _PendingResult(future, return_hint, workflow_type)
        payloads = self.converter.to_payloads(list(args), f"input of child workflow {workflow_type!r}")
        self._emit(
            StartChildWorkflow(
                seq=seq,
                workflow_type=workflow_type,
                workflow_id=workflow_id,
                input=payloads,
                execution_timeout=execution_timeout,
            )
        )
        future.add_done_callback(
            lambda f: self._on_cancel(f, self._children, seq, RequestCancelChild(child_seq=seq))
        )
        return future

    def _on_cancel(
        self, future: asyncio.Future[Any], table: dict[int, _PendingResult], seq: int, command: Command
    ) -> None:
        if future.cancelled() and table.pop(seq, None) is not None:
            self._emit(command)

    def wait_for(self, condition: Callable[[], bool]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        self._conditions.append((condition, future))
        return future

    def _upcoming_command_event(self) -> h.HistoryEvent | None:
        """The recorded command event the next command will be matched with, if replaying."""
        position = len(self._pending)
        for event in self._batch[self._cursor + 1 :]:
            if isinstance(event, h.ACTIVATION_EVENTS):
                return None
            if isinstance(event, h.COMMAND_EVENTS):
                if position == 0:
                    return event
                position -= 1
        return None

    def _replaying(self) -> bool:
        return any(isinstance(e, h.COMMAND_EVENTS) for e in self._batch[self._cursor + 1 :])

    def patched(self, patch_id: str) -> bool:
        self._refuse_in_query()
        if patch_id in self._patches:
            return self._patches[patch_id]
        upcoming = self._upcoming_command_event()
        if self._replaying() and not (
            isinstance(upcoming, h.MarkerRecorded)
            and upcoming.marker == "patch"
            and upcoming.marker_id == patch_id
        ):
            # The recorded run took the old path at this point: keep taking it.
            self._patches[patch_id] = False
            return False
        self._patches[patch_id] = True
        self._emit(RecordMarker(seq=self.next_seq(), marker="patch", marker_id=patch_id))
        return True

    def upsert_search_attributes(self, attributes: dict[str, h.SearchAttributeValue]) -> None:
        for name, value in attributes.items():
            # Refused here rather than by the database, which would refuse the run's every write.
            check_attribute_name(name)
            check_attribute_value(name, value)
        self.search_attributes.update(attributes)
        self._emit(UpsertSearchAttributes(seq=self.next_seq(), attributes=dict(attributes)))

    def side_effect(self, fn: Callable[[], Any], hint: Any) -> Any:
        seq = self.next_seq()
        marker_id = f"side-effect-{seq}"
        upcoming = self._upcoming_command_event()
        if (
            isinstance(upcoming, h.MarkerRecorded)
            and upcoming.marker_id == marker_id
            and upcoming.value is not None
        ):
            value = self.converter.from_payload(upcoming.value, hint)
            self._emit(RecordMarker(seq=seq, marker="side_effect", marker_id=marker_id, value=upcoming.value))
            return value
        with Unguarded():
            value = fn()
        payload = self.converter.to_payload(value, "side effect value")
        self._emit(RecordMarker(seq=seq, marker="side_effect", marker_id=marker_id, value=payload))
        return value

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.random.getrandbits(128), version=4)

    def default_child_id(self, seq_hint: int | None = None) -> str:
        return f"{self.info.workflow_id}/child-{self._seq + 1 if seq_hint is None else seq_hint}"


def _seed(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big")
