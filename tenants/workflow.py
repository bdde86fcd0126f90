"""What workflow code imports: decorators for the workflow class and the deterministic operations.

Everything here records or replays through the run's history; never call the clock, randomness,
threads or the network directly in workflow code (those calls fail and name what to use instead).
"""

from __future__ import annotations

import asyncio
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from perdure.platform.core.definitions import (
    QUERY_MARK,
    RUN_MARK,
    SIGNAL_MARK,
    WORKFLOW_ATTR,
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

__all__ = [
    "WorkflowInfo",
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
