"""A run's history as people read it: what it did (activities with their attempts, timers, signals,
children, markers), what is still pending, and what the run waits on now.

Pure: built from the history events alone (and the clock the caller passes), so the page, its live
updates and the tests see the same timeline. The bars are laid out here too, in thousandths of the
run's span: the console's CSP allows no inline styles, so they are drawn as SVG rectangles whose
geometry is computed on the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from perdure.platform.core import history as h
from perdure.platform.core.failures import Failure
from perdure.platform.core.payloads import Payload

ItemKind = Literal[
    "started",
    "activity",
    "timer",
    "signal",
    "child",
    "marker",
    "search_attributes",
    "workflow_task_failed",
    "workflow_task_redriven",
    "cancel_requested",
    "continued_as_new",
    "closed",
    "event",
]
KIND_LABELS: dict[ItemKind, str] = {
    "started": "started",
    "activity": "activity",
    "timer": "timer",
    "signal": "signal",
    "child": "child workflow",
    "marker": "marker",
    "search_attributes": "search attributes",
    "workflow_task_failed": "workflow task failed",
    "workflow_task_redriven": "redriven",
    "cancel_requested": "cancel requested",
    "continued_as_new": "continued as new",
    "closed": "closed",
    "event": "event",
}
# Also the CSS class of a row and of its bars (``o-<outcome>``): a fixed vocabulary, never tenant data.
Outcome = Literal[
    "pending",
    "waiting",
    "running",
    "completed",
    "failed",
    "timed_out",
    "canceled",
    "terminated",
    "retried",
    "fired",
    "continued_as_new",
    "info",
]
BAR_SCALE = 1000  # a bar's geometry, in thousandths of the run's span
MIN_BAR = 4  # so that an instant is still a visible tick


@dataclass
class Attempt:
    number: int
    began: datetime  # dispatched: when scheduled, or when its retry's backoff ends
    started: datetime | None = None  # a worker took it (not recorded for every attempt)
    ended: datetime | None = None
    outcome: Outcome = "waiting"
    failure: Failure | None = None

    def duration(self, now: datetime) -> timedelta:
        return (self.ended or max(now, self.began)) - self.began


@dataclass(frozen=True)
class Bar:
    left: int
    width: int
    outcome: Outcome


@dataclass
class TimelineItem:
    kind: ItemKind
    event_id: int  # the first event of the item
    at: datetime
    name: str  # the activity or child's type, the signal's name, the timer's duration, ...
    outcome: Outcome = "info"
    ended: datetime | None = None
    due: datetime | None = None  # a timer's fire time, or an activity's next attempt after its backoff
    attempts: list[Attempt] = field(default_factory=list)
    input: list[Payload] = field(default_factory=list)
    result: Payload | None = None
    failure: Failure | None = None
    detail: str = ""
    workflow_id: str | None = None  # a child's
    run_id: str | None = None  # a child's run, or the run this one continued as
    attributes: dict[str, h.SearchAttributeValue] = field(default_factory=dict)
    bars: list[Bar] = field(default_factory=list)

    @property
    def is_span(self) -> bool:
        return self.kind in ("activity", "timer", "child")

    @property
    def is_pending(self) -> bool:
        return self.is_span and self.ended is None

    def duration(self, now: datetime) -> timedelta | None:
        if not self.is_span:
            return None
        return (self.ended or max(now, self.at)) - self.at

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True)
class PendingActivity:
    activity_type: str
    scheduled_event_id: int
    attempt: int
    phase: Literal["scheduled", "started", "backoff"]
    since: datetime
    retry_at: datetime | None  # when in backoff
    last_failure: Failure | None


@dataclass(frozen=True)
class PendingTimer:
    started_event_id: int
    fire_at: datetime
    duration: str


@dataclass(frozen=True)
class PendingChild:
    initiated_event_id: int
    workflow_type: str
    workflow_id: str
    run_id: str | None


@dataclass(frozen=True)
class Pending:
    activities: list[PendingActivity]
    timers: list[PendingTimer]
    children: list[PendingChild]

    def __bool__(self) -> bool:
        return bool(self.activities or self.timers or self.children)


@dataclass
class Timeline:
    items: list[TimelineItem]
    pending: Pending
    window_start: datetime | None
    window_end: datetime | None
    workflow_type: str = ""
    input: list[Payload] = field(default_factory=list)
    result: Payload | None = None
    failure: Failure | None = None
    close_detail: str = ""  # a termination's or cancellation's reason
    closed: bool = False
    previous_run_id: str | None = None
    next_run_id: str | None = None
    parent: h.ParentRef | None = None
    cancel_requested: bool = False

    def latest(self, count: int) -> tuple[list[TimelineItem], int]:
        """The newest ``count`` items, and how many older ones were left out."""
        if len(self.items) <= count:
            return self.items, 0
        return self.items[-count:], len(self.items) - count


def build_timeline(events: Sequence[h.HistoryEvent], now: datetime) -> Timeline:
    """The timeline of a run from its history; ``now`` ends the bars of what is still going."""
    builder = _Builder()
    for event in events:
        builder.add(event)
    timeline = builder.timeline
    if events:
        timeline.window_start = events[0].timestamp
        last = events[-1].timestamp
        timeline.window_end = last if timeline.closed else max(now, last)
        for item in timeline.items:
            item.bars = _bars(item, timeline.window_start, timeline.window_end)
    timeline.pending = _pending(timeline.items, now)
    return timeline


class _Builder:
    def __init__(self) -> None:
        self.timeline = Timeline(items=[], pending=Pending([], [], []), window_start=None, window_end=None)
        self.activities: dict[int, TimelineItem] = {}
        self.timers: dict[int, TimelineItem] = {}
        self.children: dict[int, TimelineItem] = {}

    def _item(self, event: h.HistoryEvent, kind: ItemKind, name: str, **fields: object) -> TimelineItem:
        item = TimelineItem(kind=kind, event_id=event.event_id, at=event.timestamp, name=name)
        for key, value in fields.items():
            setattr(item, key, value)
        self.timeline.items.append(item)
        return item

    def add(self, event: h.HistoryEvent) -> None:
        timeline = self.timeline
        match event:
            case h.WorkflowExecutionStarted():
                timeline.workflow_type = event.workflow_type
                timeline.input = list(event.input)
                timeline.previous_run_id = event.continued_from_run_id
                timeline.parent = event.parent
                detail = (
                    f"continued from run {event.continued_from_run_id}" if event.continued_from_run_id else ""
                )
                self._item(event, "started", event.workflow_type, input=list(event.input), detail=detail)
            # -- activities
            case h.ActivityTaskScheduled():
                self.activities[event.event_id] = self._item(
                    event,
                    "activity",
                    event.activity_type,
                    outcome="pending",
                    input=list(event.input),
                    attempts=[Attempt(number=1, began=event.timestamp)],
                )
            case h.ActivityTaskStarted():
                if (activity := self.activities.get(event.scheduled_event_id)) is not None:
                    attempt = _attempt(activity, event.attempt, event.timestamp)
                    attempt.started, attempt.outcome = event.timestamp, "running"
                    activity.due = None
            case h.ActivityTaskRetryScheduled():
                if (activity := self.activities.get(event.scheduled_event_id)) is not None:
                    attempt = _attempt(activity, event.failed_attempt, event.timestamp)
                    attempt.ended, attempt.failure = event.timestamp, event.failure
                    attempt.outcome = "timed_out" if event.failure.kind == "timeout" else "retried"
                    activity.due = event.timestamp + event.backoff
                    activity.failure = event.failure
                    activity.attempts.append(Attempt(number=event.failed_attempt + 1, began=activity.due))
            case h.ActivityTaskCompleted():
                if (activity := self.activities.get(event.scheduled_event_id)) is not None:
                    self._end_attempt(activity, event.attempt, event, "completed")
                    activity.result, activity.failure, activity.due = event.result, None, None
            case h.ActivityTaskFailed():
                if (activity := self.activities.get(event.scheduled_event_id)) is not None:
                    self._end_attempt(activity, event.attempt, event, "failed", event.failure)
                    activity.failure, activity.due = event.failure, None
            case h.ActivityTaskTimedOut():
                if (activity := self.activities.get(event.scheduled_event_id)) is not None:
                    self._end_attempt(activity, event.attempt, event, "timed_out", event.last_failure)
                    activity.failure, activity.due = event.last_failure, None
                    activity.detail = f"{event.timeout_type.replace('_', '-')} timeout"
            case h.ActivityTaskCancelRequested() | h.ActivityTaskCanceled():
                activity = self.activities.get(event.scheduled_event_id)
                if activity is not None and activity.ended is None:
                    _settle(activity, event.timestamp, "cancelled by the workflow")
            # -- timers
            case h.TimerStarted():
                self.timers[event.event_id] = self._item(
                    event, "timer", format_duration(event.duration), outcome="pending", due=event.fire_at
                )
            case h.TimerFired() | h.TimerCanceled():
                if (timer := self.timers.get(event.started_event_id)) is not None:
                    fired = isinstance(event, h.TimerFired)
                    timer.ended, timer.outcome = event.timestamp, "fired" if fired else "canceled"
            # -- children
            case h.StartChildWorkflowExecutionInitiated():
                self.children[event.event_id] = self._item(
                    event,
                    "child",
                    event.workflow_type,
                    outcome="pending",
                    input=list(event.input),
                    workflow_id=event.workflow_id,
                )
            case h.ChildWorkflowExecutionStarted():
                if (child := self.children.get(event.initiated_event_id)) is not None:
                    child.run_id, child.outcome = event.run_id, "running"
            case h.StartChildWorkflowExecutionFailed():
                if (child := self.children.get(event.initiated_event_id)) is not None:
                    child.ended, child.outcome, child.detail = event.timestamp, "failed", event.cause
            case h.ChildWorkflowExecutionClosed():
                if (child := self.children.get(event.initiated_event_id)) is not None:
                    child.ended, child.outcome = event.timestamp, event.outcome
                    child.result, child.failure = event.result, event.failure
            case h.RequestCancelChildWorkflowExecution():
                if (child := self.children.get(event.initiated_event_id)) is not None:
                    child.detail = "cancel requested"
            # -- what happened to the run
            case h.WorkflowExecutionSignaled():
                self._item(event, "signal", event.signal_name, input=list(event.input))
            case h.MarkerRecorded():
                # A side effect's id is generated (its sequence): a patch's is the tenant's name for it.
                name = "side effect" if event.marker == "side_effect" else f"patch {event.marker_id}"
                self._item(event, "marker", name, result=event.value)
            case h.UpsertWorkflowSearchAttributes():
                self._item(
                    event, "search_attributes", ", ".join(event.attributes), attributes=event.attributes
                )
            case h.WorkflowTaskFailed():
                failure = Failure(
                    kind="internal", message=event.message, type=event.cause, stack_trace=event.stack_trace
                )
                self._item(event, "workflow_task_failed", event.cause, outcome="failed", failure=failure)
            case h.WorkflowTaskRedriven():
                self._item(event, "workflow_task_redriven", "redriven")
            case h.WorkflowExecutionCancelRequested():
                timeline.cancel_requested = True
                self._item(event, "cancel_requested", "cancel requested", detail=event.reason)
            # -- the close
            case h.WorkflowExecutionContinuedAsNew():
                timeline.closed, timeline.next_run_id = True, event.new_run_id
                self._item(
                    event,
                    "continued_as_new",
                    event.workflow_type,
                    outcome="continued_as_new",
                    run_id=event.new_run_id,
                    input=list(event.input),
                )
            case h.WorkflowExecutionCompleted():
                timeline.closed, timeline.result = True, event.result
                self._item(event, "closed", "completed", outcome="completed", result=event.result)
            case h.WorkflowExecutionFailed():
                timeline.closed, timeline.failure = True, event.failure
                self._item(event, "closed", "failed", outcome="failed", failure=event.failure)
            case h.WorkflowExecutionCanceled():
                timeline.closed, timeline.close_detail = True, event.details
                self._item(event, "closed", "canceled", outcome="canceled", detail=event.details)
            case h.WorkflowExecutionTerminated():
                timeline.closed, timeline.close_detail = True, event.reason
                self._item(event, "closed", "terminated", outcome="terminated", detail=event.reason)
            case h.WorkflowExecutionTimedOut():
                timeline.closed = True
                self._item(event, "closed", "timed out", outcome="timed_out")
            case _:
                # A kind of event this page does not know yet: shown by its type rather than hidden.
                self._item(event, "event", event.type.replace("_", " "))
        if h.is_close_event(event):
            # A close settles what is still pending: the engine drops it from the run's state. A child
            # goes on by itself; only the wait for it ends.
            for item in timeline.items:
                if item.is_pending and item.kind == "child":
                    item.ended, item.detail = event.timestamp, "no longer awaited: the run closed"
                elif item.is_pending:
                    _settle(item, event.timestamp, "ended with the run")

    @staticmethod
    def _end_attempt(
        activity: TimelineItem,
        number: int,
        event: h.HistoryEvent,
        outcome: Outcome,
        failure: Failure | None = None,
    ) -> None:
        attempt = _attempt(activity, number, event.timestamp)
        if attempt.began > event.timestamp:  # its backoff had not ended: it never ran
            activity.attempts.remove(attempt)
        else:
            attempt.ended, attempt.outcome, attempt.failure = event.timestamp, outcome, failure
        activity.attempts = [a for a in activity.attempts if a.number <= number]
        activity.ended, activity.outcome = event.timestamp, outcome


def _settle(item: TimelineItem, at: datetime, detail: str) -> None:
    """End a pending activity or timer as cancelled at ``at``."""
    # An attempt waiting out its backoff never ran.
    item.attempts = [a for a in item.attempts if a.began <= at] or item.attempts[:1]
    attempt = item.current_attempt
    if attempt is not None and attempt.ended is None:
        attempt.ended, attempt.outcome = max(at, attempt.began), "canceled"
    item.ended, item.outcome, item.due = at, "canceled", None
    item.detail = item.detail or detail


def _attempt(activity: TimelineItem, number: int, at: datetime) -> Attempt:
    for attempt in reversed(activity.attempts):
        if attempt.number == number:
            return attempt
    # Not dispatched as far as the history tells (an engine that recorded no retry for it): it began
    # when its first event says.
    attempt = Attempt(number=number, began=at)
    activity.attempts.append(attempt)
    activity.attempts.sort(key=lambda a: a.number)
    return attempt


def _pending(items: list[TimelineItem], now: datetime) -> Pending:
    activities: list[PendingActivity] = []
    timers: list[PendingTimer] = []
    children: list[PendingChild] = []
    for item in items:
        if not item.is_pending:
            continue
        if item.kind == "activity":
            attempt = item.current_attempt
            assert attempt is not None
            phase: Literal["scheduled", "started", "backoff"] = (
                "started"
                if attempt.started is not None
                else "backoff"
                if item.due is not None and item.due > now
                else "scheduled"
            )
            activities.append(
                PendingActivity(
                    activity_type=item.name,
                    scheduled_event_id=item.event_id,
                    attempt=attempt.number,
                    phase=phase,
                    since=attempt.started or attempt.began,
                    retry_at=item.due if phase == "backoff" else None,
                    last_failure=item.failure,
                )
            )
        elif item.kind == "timer":
            assert item.due is not None
            timers.append(PendingTimer(started_event_id=item.event_id, fire_at=item.due, duration=item.name))
        elif item.kind == "child":
            children.append(
                PendingChild(
                    initiated_event_id=item.event_id,
                    workflow_type=item.name,
                    workflow_id=item.workflow_id or "",
                    run_id=item.run_id,
                )
            )
    return Pending(activities, timers, children)


def waits_on(timeline: Timeline, status: str, now: datetime, blocked_reason: str | None = None) -> str | None:
    """One line on what the run waits for now; None for a closed run."""
    if status == "blocked":
        reason = f" ({blocked_reason})" if blocked_reason else ""
        return (
            f"a fix: its workflow task failed{reason}; it is retried until new code is deployed or redriven"
        )
    if status != "running" or timeline.closed:
        return None
    parts: list[str] = []
    for activity in timeline.pending.activities:
        if activity.phase == "backoff" and activity.retry_at is not None:
            parts.append(
                f"activity {activity.activity_type} (attempt {activity.attempt} at "
                f"{format_clock(activity.retry_at, now)})"
            )
        else:
            parts.append(f"activity {activity.activity_type} (attempt {activity.attempt})")
    parts.extend(f"timer until {format_clock(timer.fire_at, now)}" for timer in timeline.pending.timers)
    parts.extend(f"child {child.workflow_id}" for child in timeline.pending.children)
    return ", ".join(parts) if parts else "signal or condition"


def _bars(item: TimelineItem, start: datetime, end: datetime) -> list[Bar]:
    if not item.is_span:
        return [_bar(item.at, item.at, start, end, item.outcome)]
    if item.kind == "activity" and item.attempts:
        return [
            _bar(a.began, a.ended or max(end, a.began), start, end, a.outcome)
            for a in item.attempts
            if a.began <= end
        ]
    return [_bar(item.at, item.ended or end, start, end, item.outcome)]


def _bar(begin: datetime, finish: datetime, start: datetime, end: datetime, outcome: Outcome) -> Bar:
    span = (end - start).total_seconds()
    if span <= 0:
        return Bar(left=0, width=BAR_SCALE, outcome=outcome)
    left = round((begin - start).total_seconds() / span * BAR_SCALE)
    right = round((finish - start).total_seconds() / span * BAR_SCALE)
    left = min(max(left, 0), BAR_SCALE - MIN_BAR)
    width = min(max(right - left, MIN_BAR), BAR_SCALE - left)
    return Bar(left=left, width=width, outcome=outcome)


def format_duration(value: timedelta | None) -> str:
    """A duration as people read it: ``850 ms``, ``2.5 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 0:
        return "-" + format_duration(-value)
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{round(seconds)} s"
    minutes, second = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {second} s" if second else f"{minutes} min"
    hours, minute = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minute} min" if minute else f"{hours} h"
    days, hour = divmod(hours, 24)
    return f"{days} d {hour} h" if hour else f"{days} d"


def format_time(value: datetime | None) -> str:
    """A moment in UTC, to the millisecond."""
    if value is None:
        return ""
    value = _utc(value)
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def format_clock(value: datetime, now: datetime) -> str:
    """A moment near ``now``: its time of day when on the same day (UTC), else with its date."""
    value, now = _utc(value), _utc(now)
    if value.date() == now.date():
        return value.strftime("%H:%M:%S")
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value
