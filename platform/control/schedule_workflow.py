"""``Schedule``: one schedule of a tenant's namespace, as a durable workflow of the system namespace
(workflow id ``schedule/<namespace>/<schedule id>``). There is no cron thread anywhere: the workflow
sleeps on a durable timer until its next action time (jittered), decides what the action does with the
pure policy (``platform/core/schedule_policy.py``), and starts it through an activity that goes in by
the namespace's own admission (``schedule_activities.py``).

Why no action is missed or doubled across a crash of its cell: the timer is durable (it fires once the
cell is back), every scheduled time after the last one decided is decided on waking, in order, once
(``ScheduleState.last_processed_time``), and the start of each is named by its nominal time
(``scheduled_workflow_id``) with a request id of this schedule's, refusing a duplicate, so a start sent
again after a crash is the same run. Times older than the catch-up window when the schedule wakes are
counted as missed instead of run late.

Requests (``pause``, ``unpause``, ``trigger``, ``backfill``, ``delete``) are signals carrying a request id,
served in the order they came; the ``request`` query says what became of one, so a caller can confirm
it and send it again if it was lost (a signal that reaches the run just as it continues as new is
dropped by the engine): the schedule remembers its recent request ids across runs and takes each once.
``describe`` answers the state. Deleting ends the workflow; scheduled runs already started go on.

The history stays bounded: the workflow continues as new every ``STEPS_PER_RUN`` timers and
activities, carrying its state."""

from __future__ import annotations

import collections
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from perdure.platform.control.control_app import control_app
from perdure.platform.control.schedule_activities import ScheduleActivities, StartOutcome
from perdure.platform.control.schedule_text import format_duration, spec_summary
from perdure.platform.control.workflow_ids import SCHEDULE
from perdure.platform.core import schedule_policy as policy
from perdure.platform.core.schedule_policy import (
    ActionOutcome,
    ActionSource,
    Decision,
    OverlapPolicy,
    ScheduleState,
    SkipReason,
)
from perdure.platform.core.schedule_spec import action_times_between, jittered, next_action_times
from perdure.platform.protocol.schedule_wire import (
    RequestKind,
    ScheduleDefinition,
    ScheduleRequest,
    first_error,
)
from perdure.tenants import RetryPolicy, workflow

# Timers and activities per run; then the workflow continues as new (a few events each: ~1,000 events).
STEPS_PER_RUN = 250
# While an action waits in the buffer for the running one to close, how often the workflow looks.
BUFFER_POLL = timedelta(seconds=2)
REQUESTS_REMEMBERED = 64
SKIPS_KEPT = 10
NEXT_TIMES_SHOWN = 5
# Starts per activity (a backfill can start up to 1,000): each batch is retried alone.
START_BATCH = 20
# Missed times counted per wake-up: a workflow task must stay short whatever the outage was (an
# every-second schedule down for a year); times past this many are passed over uncounted.
MISSED_COUNTED = 100_000
STEP_TIMEOUT = timedelta(minutes=5)
# Starts and stops heartbeat while they run: one lost with its worker is retried this soon.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
LOOK_TIMEOUT = timedelta(seconds=30)  # a read of the run store
STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))


class RequestRecord(BaseModel):
    request_id: str
    kind: RequestKind
    done: bool = False
    outcome: str = ""  # what became of it, once done


class SkippedAction(BaseModel):
    nominal_time: datetime
    workflow_id: str
    source: ActionSource
    reason: SkipReason
    detail: str = ""


class ScheduleMemory(BaseModel):
    """What a run of the schedule hands to the next when it continues as new."""

    created_at: datetime
    state: ScheduleState
    recent_skips: list[SkippedAction] = Field(default_factory=list)
    requests: list[RequestRecord] = Field(default_factory=list)
    pending: list[ScheduleRequest] = Field(default_factory=list)


def _act(activity: Any, *args: Any) -> Any:
    """A start or a stop: as long as admission takes (a throttled namespace), heartbeating meanwhile."""
    return workflow.execute_activity(
        activity,
        *args,
        start_to_close_timeout=STEP_TIMEOUT,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        retry_policy=STEP_RETRY,
    )


def _look(activity: Any, *args: Any) -> Any:
    return workflow.execute_activity(
        activity, *args, start_to_close_timeout=LOOK_TIMEOUT, retry_policy=STEP_RETRY
    )


@control_app.workflow(name=SCHEDULE)
class Schedule:
    def __init__(self) -> None:
        self.definition: ScheduleDefinition | None = None
        self.created_at: datetime | None = None
        self.state: ScheduleState | None = None
        self.skips: collections.deque[SkippedAction] = collections.deque(maxlen=SKIPS_KEPT)
        self.requests: dict[str, RequestRecord] = {}  # oldest first
        # Requests taken and not served yet, in the order they came (served between actions).
        self.pending: collections.deque[ScheduleRequest] = collections.deque()
        self.deleted = False
        self.steps = 0
        self.shown_paused: bool | None = None

    @workflow.run
    async def run(
        self, definition: ScheduleDefinition, memory: ScheduleMemory | None = None
    ) -> dict[str, Any]:
        self.definition = definition
        if memory is None:
            now = workflow.now()
            # Nothing before the schedule was made is due: its first action is the first time after now.
            state = ScheduleState(
                schedule_id=definition.schedule_id,
                paused=definition.paused,
                note=definition.note,
                last_processed_time=now,
            )
            memory = ScheduleMemory(created_at=now, state=state)
        self.created_at, self.state = memory.created_at, memory.state
        self.skips.extend(memory.recent_skips)
        carried = {record.request_id: record for record in memory.requests}
        self.requests = {**carried, **self.requests}  # what came before this method ran is newer
        self.pending.extendleft(reversed(memory.pending))
        workflow.upsert_search_attributes(
            {
                "Namespace": definition.namespace,
                "Schedule": definition.schedule_id,
                "WorkflowType": definition.workflow_type,
                "Spec": spec_summary(definition.spec),
            }
        )
        while True:
            while self.pending and not self.deleted:
                await self._serve(self.pending.popleft())
            self._show_paused()
            if self.deleted:
                for left in self.pending:
                    self._finish(left.request_id, "not done: the schedule was deleted")
                return self._description()
            await self._take_due_actions()
            await self._follow_watched_action()
            if self.steps >= STEPS_PER_RUN and not self.pending:
                workflow.continue_as_new(definition, self._memory())
            await self._sleep()

    # -- requests ------------------------------------------------------------------------------------
    @workflow.signal
    def pause(self, request: Any) -> None:
        self._receive("pause", request)

    @workflow.signal
    def unpause(self, request: Any) -> None:
        self._receive("unpause", request)

    @workflow.signal
    def trigger(self, request: Any) -> None:
        self._receive("trigger", request)

    @workflow.signal
    def backfill(self, request: Any) -> None:
        self._receive("backfill", request)

    @workflow.signal
    def delete(self, request: Any) -> None:
        self._receive("delete", request)

    def _receive(self, kind: RequestKind, raw: Any) -> None:
        """Take a request once (by its id, across runs); one that does not read is answered as refused,
        never raised: a bad signal must not park the schedule."""
        request_id = raw.get("request_id") if isinstance(raw, dict) else None
        if not isinstance(request_id, str) or not request_id or request_id in self.requests:
            return
        self._remember(RequestRecord(request_id=request_id, kind=kind))
        try:
            request = ScheduleRequest.model_validate({**raw, "kind": kind})
        except ValidationError as exc:
            self._finish(request_id, f"refused: {first_error(exc)}")
            return
        self.pending.append(request)

    def _remember(self, record: RequestRecord) -> None:
        self.requests[record.request_id] = record
        while len(self.requests) > REQUESTS_REMEMBERED:
            # The oldest done first: forgetting one not done yet would let a caller send it again.
            done = (key for key, known in self.requests.items() if known.done)
            del self.requests[next(done, next(iter(self.requests)))]

    def _finish(self, request_id: str, outcome: str) -> None:
        record = self.requests.get(request_id)
        if record is not None:
            self.requests[request_id] = record.model_copy(update={"done": True, "outcome": outcome})

    async def _serve(self, request: ScheduleRequest) -> None:
        definition, state = self._definition, self._state
        overlap = request.overlap or definition.overlap
        match request.kind:
            case "pause":
                self.state = policy.pause(state, request.note or "paused")
                outcome = "paused"
            case "unpause":
                self.state = policy.unpause(state, request.note or "unpaused")
                outcome = "unpaused"
            case "delete":
                self.deleted = True
                outcome = "deleted"
            case "trigger":
                running = await self._watched_running(overlap)
                self.state, decision = policy.trigger_now(self._state, workflow.now(), running, overlap)
                refusals = await self._carry_out(decision)
                outcome = _outcome_text(decision.due, refusals) if decision.due else "nothing to do"
            case "backfill":
                assert request.start is not None and request.end is not None  # checked on receipt
                running = await self._watched_running(overlap)
                self.state, decision = policy.backfill(
                    self._state, definition.spec, request.start, request.end, workflow.now(), running, overlap
                )
                refusals = await self._carry_out(decision)
                outcome = _backfill_text(decision, refusals)
        self._finish(request.request_id, outcome)

    # -- the actions ---------------------------------------------------------------------------------
    async def _take_due_actions(self) -> None:
        """Decide every scheduled time whose (jittered) moment has come, in order; those older than the
        catch-up window are counted as missed."""
        definition = self._definition
        spec = definition.spec
        while True:
            now = workflow.now()
            self._count_missed(now)
            upcoming = next_action_times(spec, self._last_processed, 2)
            if not upcoming or self._action_moment(upcoming) > now:
                return
            running = await self._watched_running(definition.overlap)
            self.state, decision = policy.decide(
                self._state,
                upcoming[0],
                workflow.now(),
                running,
                definition.overlap,
                definition.catchup_window,
            )
            await self._carry_out(decision)

    def _count_missed(self, now: datetime) -> None:
        definition = self._definition
        # Missed: later than the window (``decide``'s test, strict), so one microsecond before its edge.
        cutoff = now - definition.catchup_window - timedelta(microseconds=1)
        if cutoff <= self._last_processed:
            return
        missed = action_times_between(definition.spec, self._last_processed, cutoff, limit=MISSED_COUNTED)
        if not missed:
            return
        for time in missed[-SKIPS_KEPT:]:
            self._note_skip(
                time,
                policy.scheduled_workflow_id(self._state.schedule_id, time),
                "scheduled",
                "missed_catchup",
            )
        # Past MISSED_COUNTED the rest of the backlog is passed over: up to the cutoff at once.
        through = cutoff if len(missed) == MISSED_COUNTED else missed[-1]
        self.state = policy.miss_catchup(self._state, through, len(missed))

    def _action_moment(self, upcoming: list[datetime]) -> datetime:
        """When the first of ``upcoming`` is taken: its nominal time plus its jitter (which stays below the
        gap to the second, so actions keep their order)."""
        following = upcoming[1] if len(upcoming) > 1 else None
        return jittered(
            self._definition.spec.jitter, self._definition.schedule_id, upcoming[0], next_nominal=following
        )

    async def _watched_running(self, overlap: OverlapPolicy) -> bool:
        """Whether the action the overlap policy watches still runs. An ``allow_all`` action starts
        whatever runs, so it asks nothing (unless buffered actions wait for a close)."""
        state = self._state
        if state.running_workflow_id is None:
            return False
        if overlap == "allow_all" and not state.buffered:
            return True
        self.steps += 1
        running: bool = await _look(
            ScheduleActivities.scheduled_run_open, self._definition.namespace, state.running_workflow_id
        )
        return running

    async def _follow_watched_action(self) -> None:
        """Buffered actions wait for the watched one to close: look whether it has."""
        state = self._state
        watched = state.running_workflow_id
        if watched is None or not state.buffered:
            return
        self.steps += 1
        if await _look(ScheduleActivities.scheduled_run_open, self._definition.namespace, watched):
            return
        self.state, decision = policy.on_action_closed(state, watched, workflow.now())
        await self._carry_out(decision)

    async def _carry_out(self, decision: Decision) -> dict[str, str]:
        """Cancel or terminate the running action if the decision says so, then start its actions in
        order. Returns the refused starts, by workflow id, with the reason."""
        definition = self._definition
        for outcome in decision.skipped:
            self._note_skip(outcome.nominal_time, outcome.workflow_id, outcome.source, outcome.skip_reason)
        stop = decision.terminate_workflow_id or decision.cancel_workflow_id
        if stop is not None:
            self.steps += 1
            terminate = decision.terminate_workflow_id is not None
            await _act(
                ScheduleActivities.stop_scheduled_run,
                definition.namespace,
                stop,
                terminate,
                f"schedule {definition.schedule_id}: an overlapping action replaces it",
            )
        refusals: dict[str, str] = {}
        starts = list(decision.starts)
        for first in range(0, len(starts), START_BATCH):
            batch = starts[first : first + START_BATCH]
            self.steps += 1
            outcomes: list[StartOutcome] = await _act(
                ScheduleActivities.start_scheduled_runs,
                definition.namespace,
                definition.workflow_type,
                definition.args,
                [action.workflow_id for action in batch],
                workflow.info().first_run_id,
            )
            by_id = {action.workflow_id: action for action in batch}
            for started in outcomes:
                if started.started:
                    continue
                refusals[started.workflow_id] = started.reason
                self.state = policy.start_refused(self._state, started.workflow_id)
                action = by_id[started.workflow_id]
                self._note_skip(
                    action.nominal_time, action.workflow_id, action.source, "refused", started.reason
                )
        return refusals

    def _note_skip(
        self,
        time: datetime,
        workflow_id: str,
        source: ActionSource,
        reason: SkipReason | None,
        detail: str = "",
    ) -> None:
        if reason in (None, "already_processed"):
            return  # not an action: the same one met again
        self.skips.append(
            SkippedAction(
                nominal_time=time, workflow_id=workflow_id, source=source, reason=reason, detail=detail
            )
        )

    async def _sleep(self) -> None:
        """Until the next action's moment, the next look at the watched action when some wait for it to
        close, or a request, whichever comes first."""
        state = self._state
        now = workflow.now()
        wake: datetime | None = None
        upcoming = next_action_times(self._definition.spec, self._last_processed, 2)
        if upcoming:
            wake = self._action_moment(upcoming)
        if state.buffered and state.running_workflow_id is not None:
            wake = min(wake or now + BUFFER_POLL, now + BUFFER_POLL)

        def woken() -> bool:
            return bool(self.pending) or self.deleted

        if wake is None:
            await workflow.wait_condition(woken)  # no action time left: only requests wake it
            return
        if wake <= now:
            return
        self.steps += 1
        try:
            await workflow.wait_condition(woken, timeout=wake - now)
        except TimeoutError:
            pass

    # -- what it shows -------------------------------------------------------------------------------
    def _show_paused(self) -> None:
        paused = self._state.paused
        if paused != self.shown_paused:
            workflow.upsert_search_attributes({"Paused": paused})
            self.shown_paused = paused

    @workflow.query
    def describe(self) -> dict[str, Any]:
        """The schedule: what it starts, when, its policies, its counts and latest actions."""
        return self._description()

    def _description(self) -> dict[str, Any]:
        definition, state = self._definition, self._state
        after = max(self._last_processed, workflow.now())
        return {
            "schedule": definition.schedule_id,
            "namespace": definition.namespace,
            "workflow_type": definition.workflow_type,
            "args": definition.args,
            "spec": spec_summary(definition.spec),
            "overlap": definition.overlap,
            "catchup_window": format_duration(definition.catchup_window),
            "created_at": _iso(self.created_at),
            "state": "deleted" if self.deleted else "paused" if state.paused else "active",
            "note": state.note,
            "next_action_times": [
                _iso(t) for t in next_action_times(definition.spec, after, NEXT_TIMES_SHOWN)
            ],
            "last_processed_time": _iso(state.last_processed_time),
            "running": state.running_workflow_id,
            "buffered": [action.workflow_id for action in state.buffered],
            "counts": {
                "started": state.actions_taken,
                "skipped_overlap": state.skipped_overlap,
                "skipped_paused": state.skipped_paused,
                "missed_catchup": state.missed_catchup,
                "refused": state.skipped_refused,
                "buffer_dropped": state.buffer_dropped,
            },
            "recent_actions": [
                {
                    "workflow_id": action.workflow_id,
                    "nominal_time": _iso(action.nominal_time),
                    "started_at": _iso(action.started_at),
                    "source": action.source,
                }
                for action in reversed(state.recent_actions)
            ],
            "recent_skips": [
                {
                    "workflow_id": skip.workflow_id,
                    "nominal_time": _iso(skip.nominal_time),
                    "source": skip.source,
                    "reason": skip.reason + (f": {skip.detail}" if skip.detail else ""),
                }
                for skip in reversed(self.skips)
            ],
        }

    @workflow.query
    def request(self, request_id: str) -> dict[str, Any] | None:
        """What became of a request: None if this schedule never received it."""
        record = self.requests.get(request_id)
        return record.model_dump() if record is not None else None

    def _memory(self) -> ScheduleMemory:
        assert self.created_at is not None
        return ScheduleMemory(
            created_at=self.created_at,
            state=self._state,
            recent_skips=list(self.skips),
            requests=list(self.requests.values()),
            pending=list(self.pending),
        )

    @property
    def _definition(self) -> ScheduleDefinition:
        assert self.definition is not None, "the run method sets the schedule up first"
        return self.definition

    @property
    def _state(self) -> ScheduleState:
        assert self.state is not None, "the run method sets the schedule up first"
        return self.state

    @property
    def _last_processed(self) -> datetime:
        last = self._state.last_processed_time
        assert last is not None, "set when the schedule is made"
        return last


def _outcome_text(outcome: ActionOutcome, refusals: dict[str, str]) -> str:
    if outcome.workflow_id in refusals:
        return f"refused {outcome.workflow_id}: {refusals[outcome.workflow_id]}"
    match outcome.outcome:
        case "start":
            return f"started {outcome.workflow_id}"
        case "buffer":
            return f"buffered {outcome.workflow_id} (it starts when the running action closes)"
        case _:
            return f"skipped {outcome.workflow_id}: {outcome.skip_reason}"


def _backfill_text(decision: Decision, refusals: dict[str, str]) -> str:
    started = len(decision.starts) - len(refusals)
    buffered = sum(1 for outcome in decision.outcomes if outcome.outcome == "buffer")
    skipped = collections.Counter(str(outcome.skip_reason) for outcome in decision.skipped)
    parts = [f"{started} started", f"{buffered} buffered"]
    parts += [f"{count} skipped ({reason})" for reason, count in sorted(skipped.items())]
    if refusals:
        parts.append(f"{len(refusals)} refused ({next(iter(refusals.values()))})")
    return "backfill: " + ", ".join(parts)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
