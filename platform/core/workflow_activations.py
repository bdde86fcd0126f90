"""The worker's side of a workflow task, as pure code: events in, commands (or a failure) and query
answers out.

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

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.commands import CLOSE_COMMANDS, Command
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

    def holds(self, run_id: str) -> bool:
        return run_id in self._instances

    def evict(self, run_id: str) -> None:
        self._instances.pop(run_id, None)

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
        """Advance the run's instance through ``events`` (``task.first_event_id`` onwards), then answer
        the task's queries from it."""
        if len(events) != max(0, task.last_event_id - task.first_event_id + 1) or (
            events and events[0].event_id != task.first_event_id
        ):
            raise ValueError(
                f"task {task.task_id or 'query'} of run {task.run_id} names events "
                f"{task.first_event_id}..{task.last_event_id} but carries {len(events)}"
            )
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
                commands = instance.apply([])
            else:
                assert instance is not None
                commands = instance.apply(events)
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
        if instance.closed or any(h.is_close_event(e) for e in events) or _closes(commands):
            self.evict(task.run_id)
        else:
            self._keep(task.run_id, instance)
        reply = m.WorkflowTaskCompleted(
            run_id=task.run_id,
            task_id=task.task_id,
            commands=commands,
            sticky_queue=self.sticky_queue if self.holds(task.run_id) else None,
            identity=self.identity,
        )
        return ActivationOutcome(reply, answers)

    def _keep(self, run_id: str, instance: WorkflowInstance) -> None:
        self._instances[run_id] = instance
        self._instances.move_to_end(run_id)
        while len(self._instances) > self.capacity:
            self._instances.popitem(last=False)

    def _answer(self, instance: WorkflowInstance, query: m.PendingQuery) -> QueryAnswer:
        try:
            return QueryAnswer(query, result=instance.query(query.query_name, query.input))
        except ApplicationError as exc:
            return QueryAnswer(query, error=str(exc), failure_type=exc.type)


def _closes(commands: Sequence[Command]) -> bool:
    return any(isinstance(c, CLOSE_COMMANDS) for c in commands)
