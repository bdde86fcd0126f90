"""``App``: a tenant's registry of workflows and activities, deployed to a namespace by import path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from perdure.platform.core.definitions import (
    ACTIVITY_ATTR,
    WORKFLOW_ATTR,
    ActivityDefinition,
    UnknownActivityTypeError,
    UnknownWorkflowTypeError,
    WorkflowDefinition,
)

T = TypeVar("T", bound=type)
F = TypeVar("F", bound=Callable[..., Any])


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

    def activity(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Register an activity (sync or async): ``@app.activity`` or ``@app.activity(name="...")``."""

        def register(f: F) -> F:
            definition = ActivityDefinition.from_function(f, name)
            if definition.name in self.activities and self.activities[definition.name].fn is not f:
                raise ValueError(
                    f"activity type {definition.name!r} is registered twice in app {self.name!r}"
                )
            self.activities[definition.name] = definition
            setattr(f, ACTIVITY_ATTR, definition)
            return f

        return register(fn) if fn is not None else register

    def include(self, *others: App) -> App:
        """Serve the workflows and activities of ``others`` too (one namespace, apps of several modules);
        a type name registered twice for different code is refused."""
        for other in others:
            for name, definition in other.workflows.items():
                if self.workflows.setdefault(name, definition).cls is not definition.cls:
                    raise ValueError(f"workflow type {name!r} is registered twice in app {self.name!r}")
            for name, activity in other.activities.items():
                if self.activities.setdefault(name, activity).fn is not activity.fn:
                    raise ValueError(f"activity type {name!r} is registered twice in app {self.name!r}")
        return self

    def get_workflow(self, name: str) -> WorkflowDefinition:
        try:
            return self.workflows[name]
        except KeyError:
            raise UnknownWorkflowTypeError(name, list(self.workflows)) from None

    def get_activity(self, name: str) -> ActivityDefinition:
        try:
            return self.activities[name]
        except KeyError:
            raise UnknownActivityTypeError(name, list(self.activities)) from None

    def __repr__(self) -> str:
        return f"App({self.name!r}, workflows={sorted(self.workflows)}, activities={sorted(self.activities)})"
