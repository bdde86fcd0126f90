"""What a reset makes of a run's history (docs/reset.md): pure, shared by the cell's engine and the
local environment through ``ExecutionStateMachine.reset``.

A workflow task here is one activation (the start, or an activation event: a result, a signal, a timer
firing, a cancel request) and the commands its code issued, recorded right after it. A *reset point* is
such an activation: the new run's history is the old one's events up to and including it, so the new
run's first workflow task gives the code that activation again and records whatever commands the code
(perhaps corrected since) issues now. Not every activation is a point:

- one received while the run was parked (a failed workflow task), and not yet redriven: its code never
  took it in a task of its own;
- one after which a child workflow is pending: the child answers its parent run only, so the new run
  would wait for it for ever (Temporal refuses these resets too);
- the close of the run, and anything after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core.run_state import RunState

FIRST_WORKFLOW_TASK = "first-workflow-task"
LAST_WORKFLOW_TASK = "last-workflow-task"
# How many valid points a refusal names (a long history has thousands).
_POINTS_NAMED = 20


class ResetRefused(ValueError):
    """The reset cannot be done as asked; the message says why and what can be asked instead."""


@dataclass(frozen=True)
class ResetPlan:
    """A new run's history and what it receives next: ``events`` are the copied prefix (its started
    event naming the new run) followed by the reset event; ``signals`` the signals to apply after it,
    in their order, as they would have reached the run."""

    point: int
    events: list[h.HistoryEvent]
    signals: list[m.SignalWorkflow]


def reset_target(to: object) -> int | m.ResetPointName:
    """``to`` as a reset takes it (an event id or a point's name), checked before it is sent."""
    if to == FIRST_WORKFLOW_TASK:
        return "first-workflow-task"
    if to == LAST_WORKFLOW_TASK:
        return "last-workflow-task"
    if isinstance(to, int) and not isinstance(to, bool):
        return to
    raise ResetRefused(
        f"reset to {to!r}: give an event id, {FIRST_WORKFLOW_TASK!r} or {LAST_WORKFLOW_TASK!r}"
    )


def reset_run_id(namespace: str, workflow_id: str, request_id: str) -> str:
    """The id of the run a reset makes: derived from its request id, so the reset sent again (or read
    again after a crash) finds the run it made instead of making another. Apart from start's run ids
    (``fresh_run_id``): no start request id can name a reset's run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"perdure-reset:{namespace}/{workflow_id}/{request_id}"))


def reset_points(history: Sequence[h.HistoryEvent]) -> list[int]:
    """The event ids a run may be reset to, in order (see the module's docstring). A scan of what the
    rule needs (parked or not, children pending), not a rebuild of the state: a long history's reset
    must not hold its partition for long."""
    if not history or not isinstance(history[0], h.WorkflowExecutionStarted):
        return []
    points = [1]
    parked = False
    children: set[int] = set()
    for event in history[1:]:
        match event:
            case _ if h.is_close_event(event):
                break
            case h.WorkflowTaskFailed():
                parked = True
            case h.WorkflowTaskRedriven():
                parked = False
            case h.StartChildWorkflowExecutionInitiated():
                children.add(event.event_id)
            case h.ChildWorkflowExecutionClosed() | h.StartChildWorkflowExecutionFailed():
                children.discard(event.initiated_event_id)
        if isinstance(event, h.ACTIVATION_EVENTS) and not parked and not children:
            points.append(event.event_id)
    return points


def _named(points: Sequence[int]) -> str:
    if len(points) <= _POINTS_NAMED:
        return ", ".join(map(str, points))
    head = ", ".join(map(str, points[: _POINTS_NAMED // 2]))
    tail = ", ".join(map(str, points[-_POINTS_NAMED // 2 :]))
    return f"{head}, ... ({len(points) - _POINTS_NAMED} more) ..., {tail}"


def resolve_point(history: Sequence[h.HistoryEvent], to: int | str) -> int:
    """The event id ``to`` names: an id itself, or ``first-workflow-task`` (the start: the code runs
    again from its top) or ``last-workflow-task`` (the latest point). Raises ``ResetRefused`` naming
    the valid points when ``to`` is none of them."""
    points = reset_points(history)
    if not points:
        raise ResetRefused("the run has no history to reset")
    if to == FIRST_WORKFLOW_TASK:
        return points[0]
    if to == LAST_WORKFLOW_TASK:
        return points[-1]
    if isinstance(to, bool) or not isinstance(to, int):
        raise ResetRefused(
            f"reset to {to!r}: give an event id, {FIRST_WORKFLOW_TASK!r} or {LAST_WORKFLOW_TASK!r}"
        )
    if to in points:
        return to
    last = history[-1].event_id
    if not 1 <= to <= last:
        why = f"the run's history has events 1 to {last}"
    else:
        event = history[to - 1]
        why = f"event {to} ({event.type}) is not a workflow task's activation"
        if isinstance(event, h.ACTIVATION_EVENTS):
            why = f"event {to} ({event.type}) came while the run was parked or had a child pending"
    raise ResetRefused(f"cannot reset to event {to}: {why}; the reset points are {_named(points)}")


def signals_after(
    history: Sequence[h.HistoryEvent], point: int, waiting: Sequence[m.RunMessage] = ()
) -> list[m.SignalWorkflow]:
    """The signals the run received after ``point``: those recorded after it, then those that waited
    for its code (``RunState.buffered``) and were never recorded, each marked as carried over."""
    run_id = history[0].run_id if isinstance(history[0], h.WorkflowExecutionStarted) else ""
    recorded = [
        m.SignalWorkflow(request_id=e.request_id, signal_name=e.signal_name, input=e.input)
        for e in history[point:]
        if isinstance(e, h.WorkflowExecutionSignaled)
    ]
    unrecorded = [s for s in waiting if isinstance(s, m.SignalWorkflow)]
    return [s.model_copy(update={"reapplied_from_run_id": run_id}) for s in [*recorded, *unrecorded]]


def plan_reset(
    state: RunState,
    history: Sequence[h.HistoryEvent],
    reset: m.ResetWorkflow,
    new_run_id: str,
    now: datetime,
) -> ResetPlan:
    """The new run a reset of the run (``state``, ``history``) makes; raises ``ResetRefused``."""
    point = resolve_point(history, reset.to)
    started = history[0]
    assert isinstance(started, h.WorkflowExecutionStarted)
    signals = signals_after(history, point, state.buffered) if reset.reapply_signals else []
    first = started.model_copy(
        update={"run_id": new_run_id, "original_run_id": started.original_run_id or started.run_id}
    )
    marker = h.WorkflowExecutionReset(
        event_id=point + 1,
        timestamp=now,
        reset_from_run_id=state.run_id,
        reset_point=point,
        reason=reset.reason,
        request_id=reset.request_id,
        reapplied_signals=len(signals),
    )
    return ResetPlan(point=point, events=[first, *history[1:point], marker], signals=signals)
