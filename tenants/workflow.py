"""What workflow code imports: decorators for the workflow class and the deterministic operations.

Everything here records or replays through the run's history; never call the clock, randomness,
threads or the network directly in workflow code (those calls fail and name what to use instead).
"""

from __future__ import annotations

import asyncio
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, Self, TypeVar, overload

from perdure.platform.core.definitions import (
    QUERY_MARK,
    RUN_MARK,
    SIGNAL_MARK,
    UPDATE_MARK,
    WORKFLOW_ATTR,
    UnfinishedPolicy,
    UpdateMark,
    WorkflowDefinition,
    activity_definition_of,
)
from perdure.platform.core.history import ActivityOptions, SearchAttributeValue
from perdure.platform.core.retry import RetryPolicy
from perdure.platform.core.workflow_instance import (
    ContinueAsNewRequest,
    WorkflowInfo,
    current_instance,
    in_workflow,
)

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
S = TypeVar("S")
T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)
T_co = TypeVar("T_co", covariant=True)

__all__ = [
    "UnfinishedPolicy",
    "UpdateMethod",
    "WorkflowInfo",
    "all_handlers_finished",
    "continue_as_new",
    "execute_activity",
    "execute_child_workflow",
    "in_workflow",
    "info",
    "now",
    "patched",
    "query",
    "random",
    "run",
    "side_effect",
    "signal",
    "sleep",
    "update",
    "upsert_search_attributes",
    "uuid4",
    "wait_condition",
]


def run(fn: F) -> F:
    """Marks the workflow's entry point (an ``async def`` method)."""
    setattr(fn, RUN_MARK, True)
    return fn


def signal(fn: F | None = None, *, name: str | None = None) -> Any:
    """Marks a signal handler; ``@workflow.signal`` or ``@workflow.signal(name="...")``."""

    def mark(f: F) -> F:
        setattr(f, SIGNAL_MARK, name or f.__name__)
        return f

    return mark(fn) if fn is not None else mark


def query(fn: F | None = None, *, name: str | None = None) -> Any:
    """Marks a query handler: a plain method that reads state and changes nothing."""

    def mark(f: F) -> F:
        setattr(f, QUERY_MARK, name or f.__name__)
        return f

    return mark(fn) if fn is not None else mark


class UpdateMethod(Protocol, Generic[S, P, R_co, T_co]):
    """A method marked ``@workflow.update``, as the type checker sees it: called on an instance as the
    method it is; ``T_co`` is what the update answers (the method's result, awaited), which the clients'
    ``execute_update`` returns; ``.validator`` marks the method that may refuse the update."""

    def __call__(self, instance: S, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> Self: ...

    @overload
    def __get__(self, instance: S, owner: type[Any], /) -> Callable[P, R_co]: ...

    def validator(self, fn: Callable[Concatenate[S, P], None]) -> Callable[Concatenate[S, P], None]: ...

    def __perdure_update_result__(self) -> T_co: ...


class _UpdateMarker(Protocol):
    """``@workflow.update(...)`` with options: marks the method it is given."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, P], Coroutine[Any, Any, T]], /
    ) -> UpdateMethod[S, P, Coroutine[Any, Any, T], T]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[S, P], T], /) -> UpdateMethod[S, P, T, T]: ...


@overload
def update(
    fn: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> UpdateMethod[S, P, Coroutine[Any, Any, T], T]: ...


@overload
def update(fn: Callable[Concatenate[S, P], T]) -> UpdateMethod[S, P, T, T]: ...


@overload
def update(*, name: str | None = None, unfinished_policy: UnfinishedPolicy = "wait") -> _UpdateMarker: ...


def update(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    unfinished_policy: UnfinishedPolicy = "wait",
) -> Any:
    """Marks an update handler: a method (``async def`` or plain) that may change the workflow's state,
    issue activities, timers and conditions, and answer its caller. ``@workflow.update`` or
    ``@workflow.update(name="...", unfinished_policy="abandon")``; ``@method.validator`` marks a plain
    method with the same arguments that refuses the update by raising (a refused update leaves no
    trace in the history; the validator must not change anything).

    ``unfinished_policy``: with ``"wait"`` (the default) the run does not complete or continue as new
    while this handler runs; ``"abandon"`` lets it close, and the update's callers are told it did not
    finish."""

    def mark(f: Callable[..., Any]) -> Any:
        marker = UpdateMark(name or f.__name__, unfinished_policy)
        setattr(f, UPDATE_MARK, marker)

        def validator(v: Callable[..., Any]) -> Callable[..., Any]:
            marker.validator = v
            return v

        # An attribute of the function, seen by the type checker through ``UpdateMethod``.
        setattr(f, "validator", validator)  # noqa: B010
        return f

    return mark(fn) if fn is not None else mark


def all_handlers_finished() -> bool:
    """Whether no update handler of the run is still running (for ``wait_condition`` before the run
    returns, when handlers are ``unfinished_policy="abandon"``)."""
    return current_instance().all_handlers_finished()


def now() -> datetime:
    """The time of the current workflow task (timezone-aware UTC), the same on every replay."""
    return current_instance().now


def random() -> _random.Random:
    """A random generator seeded by the run: the same sequence on every replay."""
    return current_instance().random


def uuid4() -> _uuid.UUID:
    return current_instance().uuid4()


def info() -> WorkflowInfo:
    return current_instance().info


def patched(patch_id: str) -> bool:
    """True on runs that reached this point with the new code; False when replaying an older history."""
    return current_instance().patched(patch_id)


def side_effect(fn: Callable[[], Any], *, result_type: Any = Any) -> Any:
    """Run ``fn`` once and record its value; replays return the recorded value."""
    return current_instance().side_effect(fn, result_type)


def upsert_search_attributes(attributes: dict[str, SearchAttributeValue]) -> None:
    """Set (or change) attributes the run is found by; they are recorded in the history and shown by
    ``describe``. Values are strings, numbers, booleans or lists of strings."""
    current_instance().upsert_search_attributes(attributes)


async def sleep(duration: timedelta | float) -> None:
    """A durable timer: survives crashes and restarts."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if seconds <= 0:
        return
    await current_instance().start_timer(timedelta(seconds=seconds))


async def wait_condition(condition: Callable[[], bool], *, timeout: timedelta | float | None = None) -> None:
    """Wait until ``condition()`` holds; raises ``asyncio.TimeoutError`` after ``timeout``."""
    instance = current_instance()
    if condition():
        return
    waiter = instance.wait_for(condition)
    if timeout is None:
        await waiter
        return
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    timer = instance.start_timer(timedelta(seconds=seconds))
    try:
        await asyncio.wait([waiter, timer], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        waiter.cancel()
        timer.cancel()
        raise
    if waiter.done():
        timer.cancel()
        return
    waiter.cancel()
    raise TimeoutError(f"condition not met within {timedelta(seconds=seconds)}")


def _seconds(value: timedelta | float | None) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    return timedelta(seconds=value)


def execute_activity(
    activity: Callable[..., Any] | str,
    *args: Any,
    start_to_close_timeout: timedelta | float | None = None,
    schedule_to_close_timeout: timedelta | float | None = None,
    schedule_to_start_timeout: timedelta | float | None = None,
    heartbeat_timeout: timedelta | float | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
) -> Awaitable[Any]:
    """Schedule an activity and return an awaitable of its result (raises ``ActivityError``)."""
    definition = activity_definition_of(activity)
    if definition is None and not isinstance(activity, str):
        raise TypeError(f"{activity!r} is not an activity (decorate it with @app.activity, or pass its name)")
    if start_to_close_timeout is None and schedule_to_close_timeout is None:
        raise ValueError("set start_to_close_timeout or schedule_to_close_timeout for an activity")
    options = ActivityOptions(
        start_to_close_timeout=_seconds(start_to_close_timeout),
        schedule_to_close_timeout=_seconds(schedule_to_close_timeout),
        schedule_to_start_timeout=_seconds(schedule_to_start_timeout),
        heartbeat_timeout=_seconds(heartbeat_timeout),
        retry_policy=retry_policy,
    )
    name = definition.name if definition is not None else str(activity)
    hint = result_type if result_type is not None else (definition.return_type if definition else Any)
    return current_instance().schedule_activity(name, args, options, hint)


def execute_child_workflow(
    workflow: Any,
    *args: Any,
    id: str | None = None,
    execution_timeout: timedelta | float | None = None,
    result_type: Any = None,
) -> Awaitable[Any]:
    """Start a child workflow and return an awaitable of its result (raises ``ChildWorkflowError``)."""
    definition = getattr(workflow, WORKFLOW_ATTR, None)
    if isinstance(workflow, str):
        name, hint = workflow, Any
    elif isinstance(definition, WorkflowDefinition):
        name, hint = definition.name, definition.run.return_type
    else:
        raise TypeError(f"{workflow!r} is not a registered workflow")
    instance = current_instance()
    child_id = id or instance.default_child_id()
    return instance.start_child(name, child_id, args, _seconds(execution_timeout), result_type or hint)


def continue_as_new(
    *args: Any, workflow: Any = None, execution_timeout: timedelta | float | None = None
) -> None:
    """End this run and start a fresh one of the same workflow id with ``args`` (history starts over)."""
    instance = current_instance()
    if workflow is None:
        name = instance.info.workflow_type
    elif isinstance(workflow, str):
        name = workflow
    else:
        definition = getattr(workflow, WORKFLOW_ATTR, None)
        if not isinstance(definition, WorkflowDefinition):
            raise TypeError(f"{workflow!r} is not a registered workflow")
        name = definition.name
    raise ContinueAsNewRequest(name, args, _seconds(execution_timeout))
