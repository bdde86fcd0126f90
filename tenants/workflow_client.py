"""What every workflow client offers, whichever it is: the ``WorkflowClient`` and ``WorkflowHandle``
protocols, and the models they return.

``Client`` (a namespace of the platform) and ``LocalEnvironment`` (the platform in one process, for
tests) both implement ``WorkflowClient``: code typed against it runs on either, and the type checker
says so. A handle is typed by its workflow's result: ``start_workflow(Orders.run, order, id=...)``
returns a ``WorkflowHandle[Receipt]`` when ``Orders.run`` returns a ``Receipt``, and its ``result()`` is
a ``Receipt``. A workflow named by its type (a string) or by its class gives a ``WorkflowHandle[Any]``.
Updates are typed the same way: ``execute_update(Cart.add_item, "pen")`` returns what ``add_item``
returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from typing_extensions import TypeVar

from perdure.platform.core.start_rules import IdReusePolicy
from perdure.tenants.workflow import UpdateMethod

# Defaulting to Any: a workflow named by a string or a class has no run method to take the type from.
ReturnType = TypeVar("ReturnType", default=Any)
ReturnType_co = TypeVar("ReturnType_co", covariant=True, default=Any)
QueryType = TypeVar("QueryType", default=Any)
UpdateType = TypeVar("UpdateType", default=Any)
UpdateType_co = TypeVar("UpdateType_co", covariant=True, default=Any)

# A workflow as the client methods take it: its run method (typed), its class, or its type's name.
WorkflowRef = Callable[..., Awaitable[ReturnType]] | type[Any] | str
# An update as the handles take it: its ``@workflow.update`` method (typed by what it answers), or its name.
UpdateRef = UpdateMethod[Any, ..., Any, UpdateType] | str


@dataclass(frozen=True)
class WorkflowDescription:
    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    start_time: datetime
    close_time: datetime | None
    history_length: int
    pending_activities: int
    pending_timers: int
    blocked_reason: str | None
    search_attributes: dict[str, Any] = field(default_factory=dict)
    # The chain of runs (docs/reset.md): the run that went on in this one's place (continue-as-new, or
    # a reset that terminated it); the run a reset made of it (an open or a closed run); for a run a
    # reset made, the run it was reset from; and the event of the older run the reset went back to.
    new_run_id: str | None = None
    reset_run_id: str | None = None
    reset_from_run_id: str | None = None
    reset_point: int | None = None


class WorkflowUpdateHandle(Protocol[UpdateType_co]):
    """An update the run took (``start_update``): its id, and its outcome once its handler finishes."""

    @property
    def id(self) -> str: ...

    @property
    def workflow_id(self) -> str: ...

    async def result(self, timeout: float | None = None) -> UpdateType_co:
        """The handler's result; ``WorkflowUpdateFailedError`` if it raised (or the run closed before it
        finished), ``TimeoutError`` after ``timeout`` seconds."""
        ...


class WorkflowHandle(Protocol[ReturnType_co]):
    """A workflow id (and, from a start, the run it started), and what can be done with it."""

    @property
    def id(self) -> str: ...

    @property
    def run_id(self) -> str | None: ...

    async def result(self, timeout: float | None = None) -> ReturnType_co:
        """The run's result once it closes, following continue-as-new; ``WorkflowFailureError`` if it
        did not complete, ``TimeoutError`` after ``timeout`` seconds."""
        ...

    async def signal(self, signal: Callable[..., Any] | str, *args: Any) -> None: ...

    async def query(self, query: Callable[..., QueryType] | str, *args: Any) -> QueryType: ...

    async def execute_update(
        self, update: UpdateRef[UpdateType], *args: Any, id: str | None = None, timeout: float | None = None
    ) -> UpdateType:
        """Run one of the workflow's update handlers and return what it returns, however long it takes
        (``timeout``: at most that many seconds, then ``TimeoutError``). ``id`` names the update (a new
        uuid by default): the same id sent again, by a retry or another caller, is the same update,
        run once. Raises ``WorkflowUpdateFailedError`` if the run refused the update (its validator,
        an unknown name, too many updates in progress) or its handler raised, and
        ``WorkflowNotFoundError`` if there is no running run to take it."""
        ...

    async def start_update(
        self, update: UpdateRef[UpdateType], *args: Any, id: str | None = None, timeout: float | None = None
    ) -> WorkflowUpdateHandle[UpdateType]:
        """As ``execute_update``, but returns once the run took the update (its validator let it in),
        with a handle on its outcome."""
        ...

    async def cancel(self, reason: str = "") -> None: ...

    async def terminate(self, reason: str = "") -> None: ...

    async def describe(self) -> WorkflowDescription: ...

    async def reset(
        self,
        to: int | str = "last-workflow-task",
        *,
        reason: str = "",
        reapply_signals: bool = True,
        run_id: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Reset the workflow's latest run (or its run ``run_id``) to ``to`` (an event id,
        ``"first-workflow-task"`` or ``"last-workflow-task"``) and return the id of the new run that
        goes on from there, which this handle follows from now on (docs/reset.md). Signals the run
        received after that point reach the new run again unless ``reapply_signals`` is off. The same
        ``request_id`` sent again makes no second run. Raises ``WorkflowResetError`` if the point is no
        reset point (its message names the valid ones) and ``WorkflowNotFoundError``."""
        ...


class WorkflowClient(Protocol):
    """Starting workflows and reaching them by id: what ``Client`` and ``LocalEnvironment`` share (both
    subclass it, so the type checker holds them to it)."""

    async def start_workflow(
        self,
        workflow: WorkflowRef[ReturnType],
        *args: Any,
        id: str,
        id_reuse_policy: IdReusePolicy = "allow_duplicate",
        execution_timeout: timedelta | None = None,
        request_id: str | None = None,
    ) -> WorkflowHandle[ReturnType]:
        """Start a run of ``workflow`` with ``args`` under the workflow id ``id``; a start sent again with
        the same ``request_id`` returns the same run. Raises ``WorkflowAlreadyStartedError`` if the id
        has a running run, or a closed one that ``id_reuse_policy`` forbids to follow."""
        ...

    async def execute_workflow(
        self,
        workflow: WorkflowRef[ReturnType],
        *args: Any,
        id: str,
        id_reuse_policy: IdReusePolicy = "allow_duplicate",
        execution_timeout: timedelta | None = None,
        request_id: str | None = None,
    ) -> ReturnType:
        """``start_workflow``, then its handle's ``result()`` (the clients inherit this one)."""
        handle = await self.start_workflow(
            workflow,
            *args,
            id=id,
            id_reuse_policy=id_reuse_policy,
            execution_timeout=execution_timeout,
            request_id=request_id,
        )
        return await handle.result()

    async def signal_with_start(
        self,
        workflow: WorkflowRef[ReturnType],
        *args: Any,
        id: str,
        signal: Callable[..., Any] | str,
        signal_args: Sequence[Any] = (),
        execution_timeout: timedelta | None = None,
    ) -> WorkflowHandle[ReturnType]:
        """Signal the running run of ``id``, or start one that gets the signal first thing."""
        ...

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> WorkflowHandle[Any]:
        """The latest run of ``workflow_id`` (or its run ``run_id``), its result untyped."""
        ...

    async def list_workflows(
        self,
        status: str | None = None,
        type: str | None = None,
        *,
        query: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Runs of the namespace, newest first: with ``status`` and ``type``, or the first ``limit`` that
        a visibility ``query`` matches in its order (docs/visibility.md), each with ``workflow_id``,
        ``run_id``, ``workflow_type``, ``status``, ``start_time``, ``close_time`` (and, by query,
        ``search_attributes``). A query that cannot be run raises ``MalformedRequestError`` whose
        message points at the offending token."""
        ...

    async def count_workflows(self, query: str = "") -> int:
        """How many runs of the namespace a visibility ``query`` matches (all of them for "")."""
        ...

    def get_workflow_handle_for(
        self, workflow: WorkflowRef[ReturnType], workflow_id: str, run_id: str | None = None
    ) -> WorkflowHandle[ReturnType]:
        """As ``get_workflow_handle``, its result typed (and decoded) as ``workflow``'s."""
        ...
