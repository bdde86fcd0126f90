"""What the decorators of ``perdure.tenants`` record about workflows and activities."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import MethodType
from typing import Any, Literal, Protocol

from perdure.platform.core.errors import PerdureError

RUN_MARK = "__perdure_run__"
SIGNAL_MARK = "__perdure_signal__"
QUERY_MARK = "__perdure_query__"
UPDATE_MARK = "__perdure_update__"
WORKFLOW_ATTR = "__perdure_workflow__"
ACTIVITY_ATTR = "__perdure_activity__"


class UnknownWorkflowTypeError(PerdureError, LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown workflow type {name!r}; the app registers: {', '.join(sorted(known)) or 'none'}"
        )
        self.name = name


class UnknownActivityTypeError(PerdureError, LookupError):
    def __init__(self, name: str, known: list[str], reason: str | None = None) -> None:
        super().__init__(
            reason
            or f"unknown activity type {name!r}; the app registers: {', '.join(sorted(known)) or 'none'}"
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


# What becomes of an update whose handler is still running when the run's method returns (Temporal's
# HandlerUnfinishedPolicy): "wait" holds the run's completion (or continue-as-new) until the handler
# finishes; "abandon" lets the run close, and the update's waiters are told it did not finish.
UnfinishedPolicy = Literal["wait", "abandon"]


@dataclass
class UpdateMark:
    """What ``@workflow.update`` puts on a method (and its ``.validator`` completes)."""

    name: str
    unfinished_policy: UnfinishedPolicy = "wait"
    validator: Callable[..., Any] | None = None


@dataclass(frozen=True)
class UpdateDefinition:
    handler: HandlerDefinition
    unfinished_policy: UnfinishedPolicy = "wait"
    # Called with the workflow object and the update's arguments before the update is taken; what it
    # raises refuses the update (which then leaves no trace in the history).
    validator: Callable[..., Any] | None = None


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    cls: type
    run: HandlerDefinition
    signals: dict[str, HandlerDefinition] = field(default_factory=dict)
    queries: dict[str, HandlerDefinition] = field(default_factory=dict)
    updates: dict[str, UpdateDefinition] = field(default_factory=dict)

    @classmethod
    def from_class(cls, workflow_cls: type, name: str | None = None) -> WorkflowDefinition:
        run: HandlerDefinition | None = None
        signals: dict[str, HandlerDefinition] = {}
        queries: dict[str, HandlerDefinition] = {}
        updates: dict[str, UpdateDefinition] = {}
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
            update = getattr(member, UPDATE_MARK, None)
            if isinstance(update, UpdateMark):
                where = f"{workflow_cls.__name__}.{attr}"
                if signal_name is not None or query_name is not None:
                    raise TypeError(f"{where}: an update cannot also be a signal or a query")
                if update.name in updates:
                    raise TypeError(f"{workflow_cls.__name__} has two updates named {update.name!r}")
                if update.validator is not None and inspect.iscoroutinefunction(update.validator):
                    raise TypeError(f"{where}: an update's validator must be a plain `def`")
                handler = HandlerDefinition(update.name, attr, types, ret, is_async)
                updates[update.name] = UpdateDefinition(handler, update.unfinished_policy, update.validator)
        if run is None:
            raise TypeError(f"{workflow_cls.__name__} has no @workflow.run method")
        return cls(name or workflow_cls.__name__, workflow_cls, run, signals, queries, updates)


def _defining_class(fn: Callable[..., Any]) -> str | None:
    """The class whose body defines ``fn``, from its qualified name (``Activities.charge``); None for a
    function defined at module level or inside another function (``outer.<locals>.charge``)."""
    owner, dot, _ = getattr(fn, "__qualname__", "").rpartition(".")
    return owner if dot and not owner.endswith("<locals>") else None


@dataclass(frozen=True)
class ActivityDefinition:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    param_types: list[Any]
    return_type: Any
    # The class whose body defines the activity, when it is a method: it runs on an instance of that
    # class bound to the app (``bound_to``), which holds what its activities share (clients, connections).
    method_of: str | None = None

    @classmethod
    def from_function(cls, fn: Callable[..., Any], name: str | None = None) -> ActivityDefinition:
        owner = _defining_class(fn)
        param_types, ret = _signature_types(fn, skip_self=owner is not None)
        return cls(name or fn.__name__, fn, inspect.iscoroutinefunction(fn), param_types, ret, owner)

    @property
    def function(self) -> Callable[..., Any]:
        """The function as defined (a bound method's own function): what identifies the activity's code."""
        function: Callable[..., Any] = getattr(self.fn, "__func__", self.fn)
        return function

    @property
    def instance(self) -> object | None:
        """The instance a method runs on, once bound."""
        return getattr(self.fn, "__self__", None)

    @property
    def needs_instance(self) -> bool:
        return self.method_of is not None and self.instance is None

    def bound_to(self, instance: object) -> ActivityDefinition:
        """This method's definition, run on ``instance``."""
        if self.method_of is None:
            raise TypeError(f"activity {self.name!r} is a function, not a method: it takes no instance")
        return replace(self, fn=MethodType(self.function, instance))


class UnboundActivityError(UnknownActivityTypeError):
    """An activity defined as a method, with no instance of its class bound to run it on."""

    def __init__(self, definition: ActivityDefinition, app: str) -> None:
        owner = definition.method_of
        super().__init__(
            definition.name,
            [],
            f"activity {definition.name!r} is a method of {owner}, and app {app!r} has no instance of "
            f"{owner} to run it on: bind one (app.bind_activities({owner}(...)))",
        )


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


def update_name_of(target: Any) -> str:
    """An update's name from its name or its ``@workflow.update`` method."""
    if isinstance(target, str):
        return target
    mark = getattr(target, UPDATE_MARK, None)
    if isinstance(mark, UpdateMark):
        return mark.name
    raise TypeError(f"{target!r} is not a @workflow.update method")


def handler_name_of(target: Any, mark: str) -> str:
    if isinstance(target, str):
        return target
    name = getattr(target, mark, None)
    if isinstance(name, str):
        return name
    kind = "signal" if mark == SIGNAL_MARK else "query"
    raise TypeError(f"{target!r} is not a @workflow.{kind} method")
