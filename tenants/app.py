"""``App``: a tenant's registry of workflows and activities, deployed to a namespace by import path.

Activities are functions, or methods of a class whose instance holds what they share (settings,
clients, connections made once per worker process instead of per call)::

    class Payments:
        def __init__(self, gateway: Gateway) -> None:
            self.gateway = gateway

        @app.activity
        async def charge(self, order: str) -> str:
            return await self.gateway.charge(order)

    app.bind_activities(Payments(Gateway.from_environment()))

A workflow names such an activity by the class's function (``workflow.execute_activity(Payments.charge,
order, ...)``); the activity's type is the method's name, and the worker runs the bound method.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from perdure.platform.core.definitions import (
    ACTIVITY_ATTR,
    WORKFLOW_ATTR,
    ActivityDefinition,
    UnboundActivityError,
    UnknownActivityTypeError,
    UnknownWorkflowTypeError,
    WorkflowDefinition,
)

T = TypeVar("T", bound=type)
F = TypeVar("F", bound=Callable[..., Any])


def _origin(definition: ActivityDefinition) -> str:
    function = definition.function
    return f"{function.__module__}.{function.__qualname__}"


class App:
    def __init__(self, name: str) -> None:
        self.name = name
        self.workflows: dict[str, WorkflowDefinition] = {}
        self.activities: dict[str, ActivityDefinition] = {}

    def workflow(self, cls: T | None = None, *, name: str | None = None) -> Any:
        """Register a workflow class: ``@app.workflow`` or ``@app.workflow(name="...")``."""

        def register(workflow_cls: T) -> T:
            definition = WorkflowDefinition.from_class(workflow_cls, name)
            if definition.name in self.workflows and self.workflows[definition.name].cls is not workflow_cls:
                raise ValueError(
                    f"workflow type {definition.name!r} is registered twice in app {self.name!r}"
                )
            self.workflows[definition.name] = definition
            setattr(workflow_cls, WORKFLOW_ATTR, definition)
            setattr(getattr(workflow_cls, definition.run.method_name), WORKFLOW_ATTR, definition)
            return workflow_cls

        return register(cls) if cls is not None else register

    @overload
    def activity(self, fn: F, *, name: str | None = None) -> F: ...

    @overload
    def activity(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...

    def activity(self, fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
        """Register an activity (sync or async): ``@app.activity`` or ``@app.activity(name="...")``, on a
        function or on a method in its class's body (then bind an instance: ``bind_activities``)."""

        def register(f: F) -> F:
            if inspect.ismethod(f):
                raise TypeError(
                    f"{f!r} is a bound method: decorate the method in its class with @app.activity and "
                    "bind the instance with app.bind_activities(instance)"
                )
            definition = ActivityDefinition.from_function(f, name)
            self._add_activity(definition)
            setattr(f, ACTIVITY_ATTR, definition)
            return f

        return register(fn) if fn is not None else register

    def bind_activities(self, *instances: object) -> App:
        """Run the activity methods of each instance's class (those this app registers) on that
        instance. Each is made once per worker process; what it holds is shared by its activities."""
        for instance in instances:
            cls = type(instance)
            methods = [
                definition
                for definition in self.activities.values()
                if definition.method_of is not None
                and inspect.getattr_static(cls, definition.function.__name__, None) is definition.function
            ]
            if not methods:
                raise ValueError(f"app {self.name!r} registers no activity method of {cls.__qualname__}")
            for definition in methods:
                if definition.instance is not None and definition.instance is not instance:
                    raise ValueError(
                        f"activity {definition.name!r} is bound already, to another {cls.__qualname__}"
                    )
                self.activities[definition.name] = definition.bound_to(instance)
        return self

    def _add_activity(self, definition: ActivityDefinition) -> None:
        known = self.activities.get(definition.name)
        if known is not None and known.function is not definition.function:
            raise ValueError(
                f"activity type {definition.name!r} is registered twice in app {self.name!r}: "
                f"by {_origin(known)} and by {_origin(definition)}"
            )
        if known is not None and None not in (known.instance, definition.instance):
            if known.instance is not definition.instance:
                raise ValueError(
                    f"activity {definition.name!r} is bound to two instances in app {self.name!r}"
                )
        if known is None or known.needs_instance:
            self.activities[definition.name] = definition

    def include(self, *others: App) -> App:
        """Serve the workflows and activities of ``others`` too (one namespace, apps of several modules);
        a type name registered twice for different code is refused."""
        for other in others:
            for name, definition in other.workflows.items():
                if self.workflows.setdefault(name, definition).cls is not definition.cls:
                    raise ValueError(f"workflow type {name!r} is registered twice in app {self.name!r}")
            for activity in other.activities.values():
                self._add_activity(activity)
        return self

    def get_workflow(self, name: str) -> WorkflowDefinition:
        try:
            return self.workflows[name]
        except KeyError:
            raise UnknownWorkflowTypeError(name, list(self.workflows)) from None

    def get_activity(self, name: str) -> ActivityDefinition:
        try:
            definition = self.activities[name]
        except KeyError:
            raise UnknownActivityTypeError(name, list(self.activities)) from None
        if definition.needs_instance:
            raise UnboundActivityError(definition, self.name)
        return definition

    def __repr__(self) -> str:
        return f"App({self.name!r}, workflows={sorted(self.workflows)}, activities={sorted(self.activities)})"
