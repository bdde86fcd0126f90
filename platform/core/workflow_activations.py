"""The worker's side of a workflow task, as pure code: events (and updates) in, commands (or a
failure), refused updates and query answers out.

A worker keeps the instances of the runs it advanced (a bounded cache) and is sent only the events
an instance has not seen (a sticky task); a task with the whole history builds the instance afresh
by replay. A sticky task whose instance is gone (evicted, or another worker took over) is answered
with a ``cache_miss`` failure, and the engine sends it again with the whole history.
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.commands import CLOSE_COMMANDS, Command, ScheduleActivity
from perdure.platform.core.definitions import UnknownWorkflowTypeError, WorkflowRegistry
from perdure.platform.core.failures import ApplicationError, NonDeterminismError, NondeterministicCallError
from perdure.platform.core.payloads import DataConverter, Payload, default_converter
from perdure.platform.core.workflow_instance import WorkflowInstance, WorkflowTaskError


@dataclass(frozen=True)
class QueryAnswer:
    query: m.PendingQuery
    result: Payload | None = None
    error: str | None = None  # why there is no result
    failure_type: str | None = None  # the error's type (UnknownQuery, QueryFailed, ...)


@dataclass
class ActivationOutcome:
    # What goes back to the engine: None for a query-only task that succeeded.
    reply: m.WorkflowTaskCompleted | m.WorkflowTaskFailed | None
    answers: list[QueryAnswer] = field(default_factory=list)


@dataclass(frozen=True)
class _AwaitedActivities:
    """An instance whose last commands were activities only (or none): the engine records them as the
    events after ``events_applied``, one each, so the results of those activities and of the ones it
    scheduled before can be taken as they come (continuations)."""

    events_applied: int
    commands: list[ScheduleActivity]


@dataclass
class PreparedContinuation:
    run_id: str
    instance: WorkflowInstance
    events: list[h.HistoryEvent]
    now: datetime

    def advance(self) -> list[Command] | BaseException:
        """Advance the instance through the events: the commands its code issued, or what it raised."""
        try:
            commands: list[Command] = self.instance.apply(self.events)
        except Exception as exc:
            return exc
        return commands


class TaskFailure(Exception):
    def __init__(self, cause: m.WorkflowTaskFailureCause, message: str, stack_trace: str = "") -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message
        self.stack_trace = stack_trace


def failure_of(exc: BaseException) -> TaskFailure:
    """How an exception raised while advancing an instance is reported to the engine."""
    if isinstance(exc, UnknownWorkflowTypeError):
        return TaskFailure("unknown_workflow_type", str(exc))
    if isinstance(exc, NonDeterminismError):
        return TaskFailure("nondeterminism", str(exc))
    if isinstance(exc, WorkflowTaskError):
        deterministic = not isinstance(exc.cause, NonDeterminismError | NondeterministicCallError)
        return TaskFailure("code_error" if deterministic else "nondeterminism", str(exc), exc.stack_trace)
    stack = "".join(traceback.format_exception(exc))[-8000:]
    return TaskFailure("code_error", f"{type(exc).__name__}: {exc}", stack)


class WorkflowActivations:
    def __init__(
        self,
        registry: WorkflowRegistry,
        converter: DataConverter = default_converter,
        *,
        capacity: int = 1000,
        sticky_queue: str | None = None,
        identity: str = "",
    ) -> None:
        self.registry = registry
        self.converter = converter
        self.capacity = capacity
        self.sticky_queue = sticky_queue
        self.identity = identity
        self._instances: collections.OrderedDict[str, WorkflowInstance] = collections.OrderedDict()
        self._awaiting: dict[str, _AwaitedActivities] = {}

    def holds(self, run_id: str) -> bool:
        return run_id in self._instances

    def evict(self, run_id: str) -> None:
        self._instances.pop(run_id, None)
        self._awaiting.pop(run_id, None)

    def replay(self, history: Sequence[h.HistoryEvent]) -> WorkflowInstance:
        started = history[0] if history else None
        if not isinstance(started, h.WorkflowExecutionStarted):
            raise ValueError("a history starts with workflow_execution_started")
        instance = WorkflowInstance(
            self.registry.get_workflow(started.workflow_type), started, self.converter
        )
        instance.apply(history)
        return instance

    def activate(self, task: o.DispatchWorkflowTask, events: Sequence[h.HistoryEvent]) -> ActivationOutcome:
        """Advance the run's instance through ``events`` (``task.first_event_id`` onwards), offer it the
        task's updates, then answer the task's queries from it."""
        if len(events) != max(0, task.last_event_id - task.first_event_id + 1) or (
            events and events[0].event_id != task.first_event_id
        ):
            raise ValueError(
                f"task {task.task_id or 'query'} of run {task.run_id} names events "
                f"{task.first_event_id}..{task.last_event_id} but carries {len(events)}"
            )
        if task.task_id:
            self._awaiting.pop(task.run_id, None)  # the instance moves on with this task
        instance = self._instances.get(task.run_id)
        if not task.whole_history and (
            instance is None or instance.events_applied != task.first_event_id - 1
        ):
            self.evict(task.run_id)
            return ActivationOutcome(
                m.WorkflowTaskFailed(
                    run_id=task.run_id,
                    task_id=task.task_id,
                    cause="cache_miss",
                    message="this worker no longer holds the run's instance",
                    queries=task.queries,
                    identity=self.identity,
                )
            )
        try:
            if task.whole_history:
                instance = self.replay(events)
                commands = instance.apply([], task.updates)
            else:
                assert instance is not None
                commands = instance.apply(events, task.updates)
        except Exception as exc:
            self.evict(task.run_id)
            failure = failure_of(exc)
            answers = [
                QueryAnswer(
                    q,
                    error=f"the run cannot be replayed to answer: {failure.message}",
                    failure_type=type(exc).__name__,
                )
                for q in task.queries
            ]
            if not task.task_id:
                return ActivationOutcome(None, answers)
            failed = m.WorkflowTaskFailed(
                run_id=task.run_id,
                task_id=task.task_id,
                cause=failure.cause,
                message=failure.message,
                stack_trace=failure.stack_trace,
                identity=self.identity,
            )
            return ActivationOutcome(failed, answers)
        answers = [self._answer(instance, query) for query in task.queries]
        if not task.task_id:
            return ActivationOutcome(None, answers)
        self._keep_unless_closed(
            task.run_id, instance, commands, closed=any(h.is_close_event(e) for e in events)
        )
        reply = m.WorkflowTaskCompleted(
            run_id=task.run_id,
            task_id=task.task_id,
            commands=commands,
            update_rejections=instance.take_rejections(),
            sticky_queue=self.sticky_queue if self.holds(task.run_id) else None,
            identity=self.identity,
        )
        return ActivationOutcome(reply, answers)

    def _can_continue(self, task: o.DispatchActivity) -> bool:
        """Whether the instance can take this activity's result as its next event: one of the
        activities it awaits (scheduled by its last commands, or before them), first attempt."""
        awaited = self._awaiting.get(task.run_id)
        instance = self._instances.get(task.run_id)
        if (
            awaited is None
            or instance is None
            or self.sticky_queue is None
            or instance.events_applied != awaited.events_applied
            or task.attempt != 1
        ):
            return False
        index: int = task.scheduled_event_id - (awaited.events_applied + 1)
        if 0 <= index < len(awaited.commands):
            return bool(awaited.commands[index].activity_type == task.activity_type)
        return index < 0 and bool(instance.awaits_activity(task.scheduled_event_id, task.activity_type))

    def continue_after(
        self, task: o.DispatchActivity, completed: m.ActivityCompleted, now: datetime
    ) -> m.Continuation | None:
        """Go on with the run's code past an activity's result, without waiting for the workflow task
        it would cause: possible when this worker holds the instance, its last commands were
        activities only (so the events the engine records for them are known), and this is the first
        attempt of one of them, reported by nothing else before (no start, no heartbeat). The engine
        takes the commands if the history is as assumed (``ExecutionStateMachine``); else it sends
        the task, and this worker, whose instance went further, gets it with the whole history."""
        prepared = self.prepare_continuation(task, completed, now)
        return None if prepared is None else self.finish_continuation(prepared, prepared.advance())

    def prepare_continuation(
        self, task: o.DispatchActivity, completed: m.ActivityCompleted, now: datetime
    ) -> PreparedContinuation | None:
        """The events to advance the instance through for ``continue_after`` (the advance itself may
        run on another thread, while nothing else touches the instance; then ``finish_continuation``)."""
        if not self._can_continue(task):
            return None
        awaited = self._awaiting.pop(task.run_id)  # the instance moves past what it awaited
        instance = self._instances[task.run_id]
        first = awaited.events_applied + 1
        events: list[h.HistoryEvent] = [
            h.ActivityTaskScheduled(
                event_id=first + i,
                timestamp=now,
                seq=command.seq,
                activity_type=command.activity_type,
                input=command.input,
                options=command.options,
            )
            for i, command in enumerate(awaited.commands)
        ]
        started_id = first + len(events)
        events.append(
            h.ActivityTaskStarted(
                event_id=started_id,
                timestamp=now,
                scheduled_event_id=task.scheduled_event_id,
                attempt=task.attempt,
                identity=self.identity,
            )
        )
        events.append(
            h.ActivityTaskCompleted(
                event_id=started_id + 1,
                timestamp=now,
                scheduled_event_id=task.scheduled_event_id,
                attempt=task.attempt,
                result=completed.result,
            )
        )
        return PreparedContinuation(task.run_id, instance, events, now)

    def finish_continuation(
        self, prepared: PreparedContinuation, advanced: list[Command] | BaseException
    ) -> m.Continuation | None:
        run_id, instance = prepared.run_id, prepared.instance
        if isinstance(advanced, BaseException):
            # The engine sends the task as usual; replaying for it reports what went wrong.
            self.evict(run_id)
            return None
        assert self.sticky_queue is not None
        self._keep_unless_closed(run_id, instance, advanced)
        return m.Continuation(
            first_event_id=prepared.events[0].event_id,
            last_event_id=prepared.events[-1].event_id,
            completed_at=prepared.now,
            commands=advanced,
            sticky_queue=self.sticky_queue,
        )

    def _keep_unless_closed(
        self, run_id: str, instance: WorkflowInstance, commands: Sequence[Command], *, closed: bool = False
    ) -> None:
        """Keep the instance for the run's next task, unless the run closed (or its commands close it)."""
        if closed or instance.closed or _closes(commands):
            self.evict(run_id)
        else:
            self._keep(run_id, instance, commands)

    def _keep(self, run_id: str, instance: WorkflowInstance, commands: Sequence[Command]) -> None:
        self._instances[run_id] = instance
        self._instances.move_to_end(run_id)
        activities = [c for c in commands if isinstance(c, ScheduleActivity)]
        if len(activities) == len(commands):
            self._awaiting[run_id] = _AwaitedActivities(instance.events_applied, activities)
        while len(self._instances) > self.capacity:
            evicted, _ = self._instances.popitem(last=False)
            self._awaiting.pop(evicted, None)

    def _answer(self, instance: WorkflowInstance, query: m.PendingQuery) -> QueryAnswer:
        try:
            return QueryAnswer(query, result=instance.query(query.query_name, query.input))
        except ApplicationError as exc:
            return QueryAnswer(query, error=str(exc), failure_type=exc.type)


def _closes(commands: Sequence[Command]) -> bool:
    return any(isinstance(c, CLOSE_COMMANDS) for c in commands)
