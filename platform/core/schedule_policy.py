"""What a schedule does when an action comes due, as pure decisions over a serialisable state.

The schedule's workflow keeps a ``ScheduleState`` (in its workflow state, carried through
continue-as-new) and, for each event, asks this module what to do:

- an action time came due: ``decide``;
- the action it is watching closed: ``on_action_closed`` (a buffered action may start);
- a user asked to run it now: ``trigger_now``; or to run the actions of a past period: ``backfill``;
- a user paused or unpaused it: ``pause`` / ``unpause``;
- a start it decided was refused where it went in (a quota): ``start_refused``;
- an outage left many times older than the catch-up window: ``miss_catchup`` counts them at once.

Each returns the new state and a ``Decision``: what to start now (in order), whether to cancel or
terminate the running action first, and what became of every action it touched (started, buffered, or
skipped and why). The workflow carries the decision out; nothing here does I/O or reads a clock.

Overlap policies are Temporal's (``ScheduleOverlapPolicy``), with its buffer algorithm: an action that
comes due while the previous one still runs is

- ``skip``: dropped;
- ``buffer_one``: kept to start when the running one closes; only one is kept, later ones are dropped;
- ``buffer_all``: kept, all of them, to start one after another;
- ``cancel_other``: kept, and the running one is cancelled; it starts once the cancelled one closes (if
  several pile up meanwhile, the latest wins);
- ``terminate_other``: as ``cancel_other`` but terminating, which closes the run at once, so the action
  starts as soon as the workflow reports the close;
- ``allow_all``: started at once, beside it.

Catch-up: a scheduled time older than ``now - catchup_window`` when it is decided (the schedule was not
running: an outage, a long deploy) is counted as missed and not run late; within the window it runs,
once. Paused: scheduled actions are skipped, and buffered ones dropped when their turn comes; a trigger
or a backfill runs regardless, as in Temporal.

No action is doubled: a scheduled time at or before the state's ``last_processed_time`` is recognised as
already decided (a replay after a crash decides it again) and changes nothing; an action already
buffered or running is not added again; and the workflow id of every action is deterministic
(``scheduled_workflow_id``), so a start sent twice is deduplicated by the engine on that id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from perdure.platform.core.schedule_spec import ScheduleSpec, action_times_between

OverlapPolicy = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]
# Where an action comes from: the spec's times, a user's trigger-now, or a user's backfill.
ActionSource = Literal["scheduled", "trigger", "backfill"]
# "refused": decided to start, but the start was refused where it went in (the target namespace's
# admission: its concurrency quota, a suspended namespace, a workflow type it no longer has).
SkipReason = Literal["overlap", "paused", "missed_catchup", "buffer_full", "already_processed", "refused"]
Outcome = Literal["start", "buffer", "skip"]

DEFAULT_OVERLAP_POLICY: OverlapPolicy = "skip"  # Temporal's default
DEFAULT_CATCHUP_WINDOW = timedelta(days=365)  # Temporal's default
# As Temporal's: a runaway buffer_all or backfill must not grow the workflow's state without bound.
MAX_BUFFERED = 1000
RECENT_ACTIONS_KEPT = 10


def scheduled_workflow_id(schedule_id: str, nominal_time: datetime) -> str:
    """The workflow id of the action due at ``nominal_time``: the schedule id with the nominal time
    appended, as Temporal does. Deterministic, so a start sent twice (after a crash) is one run."""
    return f"{schedule_id}-{_utc(nominal_time):%Y-%m-%dT%H:%M:%SZ}"


class BufferedAction(BaseModel):
    """An action waiting for the running one to close, with the overlap policy it came with."""

    model_config = ConfigDict(frozen=True)

    nominal_time: datetime
    source: ActionSource
    overlap_policy: OverlapPolicy
    workflow_id: str


class RecentAction(BaseModel):
    """An action the schedule started."""

    model_config = ConfigDict(frozen=True)

    nominal_time: datetime
    started_at: datetime
    workflow_id: str
    source: ActionSource


class ScheduleState(BaseModel):
    """What a schedule's workflow remembers between events; JSON round-trips (``model_dump_json`` /
    ``model_validate_json``) for continue-as-new."""

    model_config = ConfigDict(frozen=True)

    schedule_id: str
    paused: bool = False
    note: str = ""
    # The action the overlap policy waits on: the latest one started that has not closed (None: none).
    # An allow_all action started beside it is not waited on.
    running_workflow_id: str | None = None
    buffered: tuple[BufferedAction, ...] = ()
    # The latest scheduled time decided; scheduled times up to it are never decided again.
    last_processed_time: datetime | None = None
    actions_taken: int = 0
    skipped_overlap: int = 0
    skipped_paused: int = 0
    missed_catchup: int = 0
    buffer_dropped: int = 0
    skipped_refused: int = 0
    recent_actions: tuple[RecentAction, ...] = ()  # oldest first, at most RECENT_ACTIONS_KEPT


class ActionOutcome(BaseModel):
    """What became of one action: started now, waiting in the buffer, or skipped (and why)."""

    model_config = ConfigDict(frozen=True)

    nominal_time: datetime
    source: ActionSource
    workflow_id: str
    outcome: Outcome
    skip_reason: SkipReason | None = None


class Decision(BaseModel):
    """What the schedule's workflow does now. First cancel or terminate ``cancel_workflow_id`` /
    ``terminate_workflow_id`` if set, then start ``starts`` in order (each with its ``workflow_id``).
    The action that asked for the cancel or terminate waits in the buffer; ``on_action_closed`` starts
    it once the workflow sees that run close.

    ``outcomes`` lists every action this step decided or changed: the new ones (whatever became of
    them) and buffered ones that started or were dropped. ``due`` is the outcome of the one action the
    call was about (``decide``, ``trigger_now``); None for ``backfill`` and ``on_action_closed``."""

    model_config = ConfigDict(frozen=True)

    due: ActionOutcome | None = None
    outcomes: tuple[ActionOutcome, ...] = ()
    cancel_workflow_id: str | None = None
    terminate_workflow_id: str | None = None

    @property
    def starts(self) -> tuple[ActionOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if outcome.outcome == "start")

    @property
    def skipped(self) -> tuple[ActionOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if outcome.outcome == "skip")


def decide(
    state: ScheduleState,
    due_time: datetime,
    now: datetime,
    running: bool,
    policy: OverlapPolicy = DEFAULT_OVERLAP_POLICY,
    catchup_window: timedelta = DEFAULT_CATCHUP_WINDOW,
) -> tuple[ScheduleState, Decision]:
    """The scheduled action due at ``due_time`` (nominal), decided at ``now``. ``running`` says whether
    the action the state watches (``running_workflow_id``) is still open; the workflow knows, this
    module does not. Scheduled times must be decided in increasing order."""
    due = _utc(due_time)
    now = _utc(now)
    workflow_id = scheduled_workflow_id(state.schedule_id, due)
    if state.last_processed_time is not None and due <= state.last_processed_time:
        repeat = ActionOutcome(
            nominal_time=due,
            source="scheduled",
            workflow_id=workflow_id,
            outcome="skip",
            skip_reason="already_processed",
        )
        return state, Decision(due=repeat, outcomes=(repeat,))
    state = state.model_copy(update={"last_processed_time": due})
    skip_reason: SkipReason | None = None
    if now - due > catchup_window:
        skip_reason = "missed_catchup"
        state = state.model_copy(update={"missed_catchup": state.missed_catchup + 1})
    elif state.paused:
        skip_reason = "paused"
        state = state.model_copy(update={"skipped_paused": state.skipped_paused + 1})
    if skip_reason is not None:
        skipped = ActionOutcome(
            nominal_time=due,
            source="scheduled",
            workflow_id=workflow_id,
            outcome="skip",
            skip_reason=skip_reason,
        )
        # The buffer still gets its turn: a close the workflow has not reported yet may free it.
        state, decision = _process(state, (), now, running)
        return state, decision.model_copy(update={"due": skipped, "outcomes": (skipped, *decision.outcomes)})
    action = BufferedAction(
        nominal_time=due, source="scheduled", overlap_policy=policy, workflow_id=workflow_id
    )
    state, decision = _process(state, (action,), now, running)
    return state, decision.model_copy(update={"due": _outcome_of(decision, workflow_id)})


def on_action_closed(state: ScheduleState, workflow_id: str, now: datetime) -> tuple[ScheduleState, Decision]:
    """The action ``workflow_id`` closed (completed, failed, cancelled, terminated, timed out). If it is
    the one the overlap policy waits on, the buffer gets its turn; the close of any other (an
    ``allow_all`` action) changes nothing."""
    if workflow_id != state.running_workflow_id:
        return state, Decision()
    return _process(state, (), _utc(now), running=False)


def trigger_now(
    state: ScheduleState,
    now: datetime,
    running: bool,
    policy: OverlapPolicy = DEFAULT_OVERLAP_POLICY,
) -> tuple[ScheduleState, Decision]:
    """Take an action now, nominally due at ``now``, through ``policy``: the schedule's own unless the
    trigger request names another (Temporal's default). Runs even when paused; no catch-up applies."""
    now = _utc(now)
    action = BufferedAction(
        nominal_time=now,
        source="trigger",
        overlap_policy=policy,
        workflow_id=scheduled_workflow_id(state.schedule_id, now),
    )
    state, decision = _process(state, (action,), now, running)
    return state, decision.model_copy(update={"due": _outcome_of(decision, action.workflow_id)})


def backfill_times(spec: ScheduleSpec, start: datetime, end: datetime) -> list[datetime]:
    """The spec's nominal action times in ``[start, end]``, both inclusive (as Temporal's backfill)."""
    # Action times are whole seconds, so one microsecond before start makes the window inclusive.
    times: list[datetime] = action_times_between(spec, _utc(start) - timedelta(microseconds=1), _utc(end))
    return times


def backfill(
    state: ScheduleState,
    spec: ScheduleSpec,
    start: datetime,
    end: datetime,
    now: datetime,
    running: bool,
    policy: OverlapPolicy,
) -> tuple[ScheduleState, Decision]:
    """Take the actions the spec would have taken in ``[start, end]`` as if that time passed now, all
    through ``policy`` (a backfill names its own; a schedule's ``skip`` would drop all but the first).
    Paused and the catch-up window do not apply. Actions beyond the buffer's room (``MAX_BUFFERED``) are
    skipped as ``buffer_full``: a larger backfill is sent in parts."""
    actions = tuple(
        BufferedAction(
            nominal_time=time,
            source="backfill",
            overlap_policy=policy,
            workflow_id=scheduled_workflow_id(state.schedule_id, time),
        )
        for time in backfill_times(spec, start, end)
    )
    return _process(state, actions, _utc(now), running)


def start_refused(state: ScheduleState, workflow_id: str) -> ScheduleState:
    """The start of ``workflow_id``, decided by this module, was refused where it went in: it did not
    happen, so it is not taken, not recent, and not watched; it counts as skipped (``refused``). Call it
    once per refused start of a decision's ``starts``."""
    return state.model_copy(
        update={
            "actions_taken": state.actions_taken - 1,
            "recent_actions": tuple(a for a in state.recent_actions if a.workflow_id != workflow_id),
            "running_workflow_id": (
                None if state.running_workflow_id == workflow_id else state.running_workflow_id
            ),
            "skipped_refused": state.skipped_refused + 1,
        }
    )


def miss_catchup(state: ScheduleState, through: datetime, count: int) -> ScheduleState:
    """Count ``count`` scheduled times after the last processed one, up to ``through`` and all older than
    the catch-up window, as missed at once: what ``decide`` does to each, without the cost of a decision
    per time when an outage left many of them (an every-second schedule down for a day)."""
    through = _utc(through)
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    if state.last_processed_time is not None and through <= state.last_processed_time:
        raise ValueError("missed times must come after the last processed time")
    return state.model_copy(
        update={"last_processed_time": through, "missed_catchup": state.missed_catchup + count}
    )


def pause(state: ScheduleState, note: str = "Paused via API") -> ScheduleState:
    return state.model_copy(update={"paused": True, "note": note})


def unpause(state: ScheduleState, note: str = "Unpaused via API") -> ScheduleState:
    return state.model_copy(update={"paused": False, "note": note})


def _process(
    state: ScheduleState, new: Sequence[BufferedAction], now: datetime, running: bool
) -> tuple[ScheduleState, Decision]:
    """Temporal's buffer algorithm over the buffered actions followed by ``new``: what starts now, what
    stays buffered, what is dropped, and whether the running action is to be cancelled or terminated."""
    # Only the watched action can overlap: nothing would ever report the close of any other.
    running_id = state.running_workflow_id if running else None
    running = running_id is not None
    outcomes: list[ActionOutcome] = []

    def skip(action: BufferedAction, reason: SkipReason) -> None:
        outcomes.append(_outcome(action, "skip", reason))

    pending: list[BufferedAction] = list(state.buffered)
    known = {action.workflow_id for action in pending}
    if running_id is not None:
        known.add(running_id)
    for action in new:
        if action.workflow_id in known:
            skip(action, "already_processed")
        elif len(pending) >= MAX_BUFFERED:
            skip(action, "buffer_full")
        else:
            known.add(action.workflow_id)
            pending.append(action)

    overlapping: list[BufferedAction] = []  # allow_all: started beside whatever runs
    chosen: BufferedAction | None = None  # the one non-overlapping start, if any
    kept: list[BufferedAction] = []
    cancel = terminate = False
    for action in pending:
        # A paused schedule takes no scheduled action: one whose turn to start comes is dropped (a
        # buffered one keeps its place while the running one runs, in case of an unpause).
        held = action.source == "scheduled" and state.paused
        if action.overlap_policy == "allow_all" or (not running and chosen is None):
            if held:
                skip(action, "paused")
            elif action.overlap_policy == "allow_all":
                overlapping.append(action)
            else:
                chosen = action
            continue
        match action.overlap_policy:
            case "skip":
                skip(action, "overlap")
            case "buffer_one":
                # Only the first waits: later ones would run back to back for no purpose.
                if kept:
                    skip(action, "overlap")
                else:
                    kept.append(action)
            case "buffer_all":
                kept.append(action)
            case "cancel_other" | "terminate_other":
                if running:
                    cancel = cancel or action.overlap_policy == "cancel_other"
                    terminate = terminate or action.overlap_policy == "terminate_other"
                    kept.append(action)  # starts once the running one has closed
                else:
                    # Nothing has started yet: the newer action replaces the one chosen.
                    if chosen is not None:
                        skip(chosen, "overlap")
                    chosen = action
    if cancel or terminate:
        # They would be cancelled or terminated along with the running one.
        for action in overlapping:
            skip(action, "overlap")
        overlapping = []

    starts = ([chosen] if chosen is not None else []) + overlapping
    outcomes.extend(_outcome(action, "start") for action in starts)
    new_ids = {action.workflow_id for action in new}
    outcomes.extend(_outcome(action, "buffer") for action in kept if action.workflow_id in new_ids)

    watched = running_id
    if chosen is not None:
        watched = chosen.workflow_id
    elif overlapping and watched is None:
        watched = overlapping[-1].workflow_id
    recent = (*state.recent_actions, *(_recent(action, now) for action in starts))
    skipped = [outcome for outcome in outcomes if outcome.outcome == "skip"]
    new_state = state.model_copy(
        update={
            "running_workflow_id": watched,
            "buffered": tuple(kept),
            "actions_taken": state.actions_taken + len(starts),
            "skipped_overlap": state.skipped_overlap + _count(skipped, "overlap"),
            "skipped_paused": state.skipped_paused + _count(skipped, "paused"),
            "buffer_dropped": state.buffer_dropped + _count(skipped, "buffer_full"),
            "recent_actions": recent[-RECENT_ACTIONS_KEPT:],
        }
    )
    decision = Decision(
        outcomes=tuple(sorted(outcomes, key=lambda outcome: outcome.nominal_time)),
        cancel_workflow_id=running_id if cancel else None,
        terminate_workflow_id=running_id if terminate else None,
    )
    return new_state, decision


def _outcome(action: BufferedAction, outcome: Outcome, reason: SkipReason | None = None) -> ActionOutcome:
    return ActionOutcome(
        nominal_time=action.nominal_time,
        source=action.source,
        workflow_id=action.workflow_id,
        outcome=outcome,
        skip_reason=reason,
    )


def _outcome_of(decision: Decision, workflow_id: str) -> ActionOutcome | None:
    return next((outcome for outcome in decision.outcomes if outcome.workflow_id == workflow_id), None)


def _recent(action: BufferedAction, started_at: datetime) -> RecentAction:
    return RecentAction(
        nominal_time=action.nominal_time,
        started_at=started_at,
        workflow_id=action.workflow_id,
        source=action.source,
    )


def _count(outcomes: Iterable[ActionOutcome], reason: SkipReason) -> int:
    return sum(1 for outcome in outcomes if outcome.skip_reason == reason)


def _utc(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {value.isoformat()}")
    return value.astimezone(UTC)
