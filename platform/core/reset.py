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
- a signal a reset carried over (it follows the reset event: the code took it in the new run's first
  workflow task, with the reset point's activation, not in a task of its own);
- the close of the run, and anything after it.

A reset's cost is proportional to the history it reads, once: one scan for the points, one fold of the
new run's history into its state (which also measures it against the run's history limits).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core.run_state import RunLimits, RunState, apply_event, rebuild_state

FIRST_WORKFLOW_TASK = "first-workflow-task"
LAST_WORKFLOW_TASK = "last-workflow-task"
# How many valid points a refusal names (a long history has thousands).
_POINTS_NAMED = 20


class ResetRefused(ValueError):
    """The reset cannot be done as asked; the message says why and what can be asked instead."""


@dataclass(frozen=True)
class ResetPlan:
    """A new run's first history and the state it implies: ``events`` are the copied prefix (its
    started event naming the new run), the reset event, then the signals carried over, recorded as new
    signal events in their order (so they are history, billed and bounded as history, not messages
    kept waiting in the run's state)."""

    point: int
    events: list[h.HistoryEvent]
    state: RunState

    @property
    def marker(self) -> h.WorkflowExecutionReset:
        marker = self.events[self.point]
        assert isinstance(marker, h.WorkflowExecutionReset)
        return marker

    @property
    def signals(self) -> list[h.WorkflowExecutionSignaled]:
        return [e for e in self.events[self.point + 1 :] if isinstance(e, h.WorkflowExecutionSignaled)]


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


def reset_points(history: Sequence[h.HistoryEvent], until: int | None = None) -> list[int]:
    """The event ids a run may be reset to, in order (see the module's docstring), up to ``until`` if
    given. A scan of what the rule needs (parked or not, children pending), not a rebuild of the state:
    a long history's reset must not hold its partition for long."""
    if not history or not isinstance(history[0], h.WorkflowExecutionStarted):
        return []
    points = [1]
    if until is not None:
        history = history[: max(until, 1)]
    parked = False
    children: set[int] = set()
    carried = 0  # signals a reset carried over, still to come right after its reset event
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
            case h.WorkflowExecutionReset():
                carried = event.reapplied_signals
                continue
            case h.WorkflowExecutionSignaled() if carried:
                carried -= 1
                continue
        carried = 0
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
    the valid points when ``to`` is none of them. Reads the history only as far as it must: up to
    ``to`` for a valid id, the start for the first point."""
    if not reset_points(history, until=1):
        raise ResetRefused("the run has no history to reset")
    if to == FIRST_WORKFLOW_TASK:
        return 1
    if to == LAST_WORKFLOW_TASK:
        return reset_points(history)[-1]
    if isinstance(to, bool) or not isinstance(to, int):
        raise ResetRefused(
            f"reset to {to!r}: give an event id, {FIRST_WORKFLOW_TASK!r} or {LAST_WORKFLOW_TASK!r}"
        )
    if to >= 1 and reset_points(history, until=to)[-1] == to:
        return to
    points = reset_points(history)  # for the refusal, which names them
    last = history[-1].event_id
    if not 1 <= to <= last:
        why = f"the run's history has events 1 to {last}"
    else:
        event = history[to - 1]
        why = f"event {to} ({event.type}) is not a workflow task's activation"
        if isinstance(event, h.ACTIVATION_EVENTS):
            why = (
                f"event {to} ({event.type}) came while the run was parked or had a child pending, or a "
                "reset carried it over"
            )
    raise ResetRefused(f"cannot reset to event {to}: {why}; the reset points are {_named(points)}")


def signals_after(
    history: Sequence[h.HistoryEvent], point: int, waiting: Sequence[m.RunMessage] = ()
) -> list[m.SignalWorkflow]:
    """The signals the run received after ``point``: those recorded after it, then those that waited
    for its code (``RunState.buffered``) and were never recorded, each marked as carried over. A signal
    sent again under its request id (a client's retry waiting behind the first) is carried once."""
    run_id = history[0].run_id if isinstance(history[0], h.WorkflowExecutionStarted) else ""
    return [
        m.SignalWorkflow(
            request_id=s.request_id, signal_name=s.signal_name, input=s.input, reapplied_from_run_id=run_id
        )
        for s in _carried(history, point, waiting, set())
    ]


def _carried(
    history: Sequence[h.HistoryEvent],
    point: int,
    waiting: Sequence[m.RunMessage],
    taken: set[str],
) -> list[h.WorkflowExecutionSignaled | m.SignalWorkflow]:
    """``signals_after``'s signals as they are, but those whose request id is in ``taken``."""
    signals: list[h.WorkflowExecutionSignaled | m.SignalWorkflow] = [
        e for e in history[point:] if isinstance(e, h.WorkflowExecutionSignaled)
    ]
    signals.extend(s for s in waiting if isinstance(s, m.SignalWorkflow))
    carried: list[h.WorkflowExecutionSignaled | m.SignalWorkflow] = []
    seen = set(taken)
    for signal in signals:
        if signal.request_id:
            if signal.request_id in seen:
                continue
            seen.add(signal.request_id)
        carried.append(signal)
    return carried


def plan_reset(
    state: RunState,
    history: Sequence[h.HistoryEvent],
    reset: m.ResetWorkflow,
    new_run_id: str,
    now: datetime,
    limits: RunLimits | None = None,
) -> ResetPlan:
    """The new run a reset of the run (``state``, its whole ``history``) makes; raises ``ResetRefused``,
    also when the new run's history (the prefix, the reset event and the signals carried over) would
    reach the run's history limits: the new run would be terminated for it at once."""
    limits = limits or RunLimits()
    point = resolve_point(history, reset.to)
    started = history[0]
    assert isinstance(started, h.WorkflowExecutionStarted)
    first = started.model_copy(
        update={"run_id": new_run_id, "original_run_id": started.original_run_id or started.run_id}
    )
    events: list[h.HistoryEvent] = [first, *history[1:point]]
    fresh = rebuild_state(events)
    # As the run would have taken them: one the prefix took already (by its request id) is not taken again.
    taken = set(fresh.recent_request_ids)
    signals = _carried(history, point, state.buffered, taken) if reset.reapply_signals else []
    marker = h.WorkflowExecutionReset(
        event_id=point + 1,
        timestamp=now,
        reset_from_run_id=state.run_id,
        reset_point=point,
        reason=reset.reason,
        request_id=reset.request_id,
        reapplied_signals=len(signals),
        new_run_id=new_run_id,
    )
    events.append(marker)
    apply_event(fresh, marker)
    total = point + 1 + len(signals)
    if total < limits.max_events:
        for event_id, signal in enumerate(signals, start=point + 2):
            if fresh.history_size >= limits.max_bytes:
                break  # refused below: the rest need not be measured
            event = h.WorkflowExecutionSignaled(
                event_id=event_id,
                timestamp=now,
                signal_name=signal.signal_name,
                input=signal.input,
                request_id=signal.request_id,
                reapplied_from_run_id=state.run_id,
            )
            events.append(event)
            apply_event(fresh, event)
    if total >= limits.max_events or fresh.history_size >= limits.max_bytes:
        size = f"{fresh.history_size} bytes" + (" or more" if len(events) < total else "")
        raise ResetRefused(
            f"the new run's history would hold {total} events (events 1 to {point} copied, the reset event "
            f"and {len(signals)} signals carried over) and {size}: the namespace allows "
            f"{limits.max_events} events and {limits.max_bytes} bytes; reset to an earlier point, or "
            "without carrying the signals over (reapply_signals=False, --no-reapply-signals)"
        )
    return ResetPlan(point=point, events=events, state=fresh)
