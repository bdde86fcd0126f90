"""What the decorators of ``perdure.tenants`` record about workflows and activities."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

RUN_MARK = "__perdure_run__"
SIGNAL_MARK = "__perdure_signal__"
QUERY_MARK = "__perdure_query__"
WORKFLOW_ATTR = "__perdure_workflow__"
ACTIVITY_ATTR = "__perdure_activity__"


class UnknownWorkflowTypeError(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown workflow type {name!r}; the app registers: {', '.join(sorted(known)) or 'none'}"
        )
        self.name = name


class UnknownActivityTypeError(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown activity type {name!r}; the app registers: {', '.join(sorted(known)) or 'none'}"
        )
        self.name = name


def _signature_types(fn: Callable[..., Any], skip_self: bool) -> tuple[list[Any], Any]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    params = list(inspect.signature(fn).parameters.values())
    if skip_self and params:
        params = params[1:]
    types = [
        hints.get(p.name, Any)
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return types, hints.get("return", Any)


@dataclass(frozen=True)
class HandlerDefinition:
    name: str
    method_name: str
    param_types: list[Any]
    return_type: Any
    is_async: bool


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    cls: type
    run: HandlerDefinition
    signals: dict[str, HandlerDefinition] = field(default_factory=dict)
    queries: dict[str, HandlerDefinition] = field(default_factory=dict)

    @classmethod
    def from_class(cls, workflow_cls: type, name: str | None = None) -> WorkflowDefinition:
        run: HandlerDefinition | None = None
        signals: dict[str, HandlerDefinition] = {}
        queries: dict[str, HandlerDefinition] = {}
        for attr, member in inspect.getmembers(workflow_cls, predicate=inspect.isfunction):
            types, ret = _signature_types(member, skip_self=True)
            is_async = inspect.iscoroutinefunction(member)
            if getattr(member, RUN_MARK, False):
                if run is not None:
                    raise TypeError(f"{workflow_cls.__name__} has two @workflow.run methods")
                if not is_async:
                    raise TypeError(f"{workflow_cls.__name__}.{attr}: @workflow.run must be `async def`")
                run = HandlerDefinition(attr, attr, types, ret, True)
            signal_name = getattr(member, SIGNAL_MARK, None)
            if signal_name is not None:
                signals[signal_name] = HandlerDefinition(signal_name, attr, types, ret, is_async)
            query_name = getattr(member, QUERY_MARK, None)
            if query_name is not None:
                if is_async:
                    raise TypeError(f"{workflow_cls.__name__}.{attr}: a query must be a plain `def`")
                queries[query_name] = HandlerDefinition(query_name, attr, types, ret, False)
        if run is None:
            raise TypeError(f"{workflow_cls.__name__} has no @workflow.run method")
        return cls(name or workflow_cls.__name__, workflow_cls, run, signals, queries)


@dataclass(frozen=True)
class ActivityDefinition:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    param_types: list[Any]
    return_type: Any

    @classmethod
    def from_function(cls, fn: Callable[..., Any], name: str | None = None) -> ActivityDefinition:
        types, ret = _signature_types(fn, skip_self=False)
        return cls(name or fn.__name__, fn, inspect.iscoroutinefunction(fn), types, ret)


class WorkflowRegistry(Protocol):
    def get_workflow(self, name: str) -> WorkflowDefinition: ...

    def get_activity(self, name: str) -> ActivityDefinition: ...


def workflow_name_of(target: Any) -> str:
    """The workflow type from a name, a workflow class or its ``run`` method."""
    if isinstance(target, str):
        return target
    definition = getattr(target, WORKFLOW_ATTR, None)
    if isinstance(definition, WorkflowDefinition):
        return definition.name
    raise TypeError(f"{target!r} is not a registered workflow (decorate its class with @app.workflow)")


def activity_definition_of(target: Any) -> ActivityDefinition | None:
    definition = getattr(target, ACTIVITY_ATTR, None)
    return definition if isinstance(definition, ActivityDefinition) else None


def handler_name_of(target: Any, mark: str) -> str:
    if isinstance(target, str):
        return target
    name = getattr(target, mark, None)
    if isinstance(name, str):
        return name
    kind = "signal" if mark == SIGNAL_MARK else "query"
    raise TypeError(f"{target!r} is not a @workflow.{kind} method")
