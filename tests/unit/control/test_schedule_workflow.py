"""The ``Schedule`` workflow in LocalEnvironment with virtual time: the scheduled runs are a dictionary
here (a run started at t closes at t + RUN_TIME), and the activities that start, look at and stop them
are the test's own, under the platform's names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tenacity import AsyncRetrying, stop_after_delay, wait_fixed

from perdure.platform.control import schedule_workflow
from perdure.platform.control.schedule_activities import StartOutcome
from perdure.platform.control.schedule_workflow import Schedule
from perdure.platform.core.schedule_policy import OverlapPolicy, ScheduleState, scheduled_workflow_id
from perdure.platform.core.schedule_spec import IntervalSpec, ScheduleSpec
from perdure.platform.protocol.schedule_wire import ScheduleDefinition
from perdure.tenants import App
from perdure.tenants.testing import LocalEnvironment

pytestmark = pytest.mark.timeout(60)
T0 = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
app = App("schedule-tests")
app.workflow(Schedule)


@dataclass
class World:
    """The target namespace as the fake activities see it."""

    env: LocalEnvironment | None = None
    run_time: timedelta = timedelta(seconds=1)
    started: list[tuple[str, datetime]] = field(default_factory=list)  # workflow id, when
    attempts: list[str] = field(default_factory=list)  # every start asked for, retries included
    closes_at: dict[str, datetime] = field(default_factory=dict)
    stopped: list[tuple[str, bool]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # workflow ids admission refuses
    delete_after: int | None = None  # starts, then the test's delete arrives

    def now(self) -> datetime:
        assert self.env is not None
        return self.env.now()


world = World()


@app.activity(name="start_scheduled_runs")
async def start_runs(
    namespace: str, workflow_type: str, args: list[Any], workflow_ids: list[str], chain: str
) -> list[StartOutcome]:
    outcomes = []
    for workflow_id in workflow_ids:
        world.attempts.append(workflow_id)
        if workflow_id in world.refuse:
            outcomes.append(StartOutcome(workflow_id=workflow_id, started=False, reason="quota: 1 at once"))
            continue
        if workflow_id not in world.closes_at:  # an id started already is the same run
            world.started.append((workflow_id, world.now()))
            world.closes_at[workflow_id] = world.now() + world.run_time
        outcomes.append(StartOutcome(workflow_id=workflow_id, started=True))
    if world.delete_after is not None and len(world.started) >= world.delete_after:
        world.delete_after = None
        asyncio.get_running_loop().create_task(request("delete"))
    return outcomes


@app.activity(name="scheduled_run_open")
async def run_open(namespace: str, workflow_id: str) -> bool:
    return world.now() < world.closes_at.get(workflow_id, world.now())


@app.activity(name="stop_scheduled_run")
async def stop_run(namespace: str, workflow_id: str, terminate: bool, reason: str) -> None:
    world.stopped.append((workflow_id, terminate))
    world.closes_at[workflow_id] = min(world.closes_at[workflow_id], world.now())


SCHEDULE_ID = "report"
WORKFLOW_ID = "schedule/ns/report"
requests_sent = 0


async def request(kind: str, **fields: Any) -> str:
    global requests_sent
    requests_sent += 1
    request_id = f"r{requests_sent}"
    assert world.env is not None
    await world.env.get_workflow_handle(WORKFLOW_ID).signal(kind, {"request_id": request_id, **fields})
    return request_id


@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    global world
    world = World()
    async with LocalEnvironment(app, start_time=T0) as environment:
        world.env = environment
        yield environment


def definition(every: int = 60, overlap: OverlapPolicy = "skip", **changes: Any) -> ScheduleDefinition:
    spec = ScheduleSpec(intervals=(IntervalSpec(every=timedelta(seconds=every)),))
    fields: dict[str, Any] = {
        "namespace": "ns",
        "schedule_id": SCHEDULE_ID,
        "workflow_type": "Report",
        "args": ["daily"],
        "spec": spec,
        "overlap": overlap,
        **changes,
    }
    return ScheduleDefinition(**fields)


async def run_until_deleted(
    env: LocalEnvironment, schedule: ScheduleDefinition, starts: int
) -> dict[str, Any]:
    world.delete_after = starts
    handle = await env.start_workflow(Schedule.run, schedule, id=WORKFLOW_ID)
    described: dict[str, Any] = await handle.result()
    return described


def minute(n: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)


async def test_each_action_time_starts_one_run_named_by_its_time(env: LocalEnvironment) -> None:
    described = await run_until_deleted(env, definition(), starts=5)
    assert [workflow_id for workflow_id, _ in world.started] == [
        scheduled_workflow_id(SCHEDULE_ID, minute(n)) for n in range(1, 6)
    ]
    assert world.started[0][0] == "report-2026-01-01T00:01:00Z"
    # Each at its time (the clock of the task that started it: not before).
    for (_, at), n in zip(world.started, range(1, 6), strict=True):
        assert minute(n) <= at < minute(n) + timedelta(seconds=5)
    assert described["state"] == "deleted"
    assert described["counts"]["started"] == 5 and described["counts"]["skipped_overlap"] == 0
    assert described["recent_actions"][0]["workflow_id"] == "report-2026-01-01T00:05:00Z"
    assert T0 <= datetime.fromisoformat(described["created_at"]) < T0 + timedelta(seconds=1)


async def test_skip_counts_the_actions_that_came_while_the_previous_one_ran(env: LocalEnvironment) -> None:
    world.run_time = timedelta(seconds=150)  # each run spans two more action times
    described = await run_until_deleted(env, definition(overlap="skip"), starts=3)
    started = [workflow_id for workflow_id, _ in world.started]
    assert started == [scheduled_workflow_id(SCHEDULE_ID, minute(n)) for n in (1, 4, 7)]
    assert described["counts"]["skipped_overlap"] == 4
    assert {skip["reason"] for skip in described["recent_skips"]} == {"overlap"}


async def test_buffer_one_starts_the_next_once_the_running_one_closes(env: LocalEnvironment) -> None:
    world.run_time = timedelta(seconds=80)
    described = await run_until_deleted(env, definition(overlap="buffer_one"), starts=3)
    (first, _), (second, t2), (third, _) = world.started
    assert first == scheduled_workflow_id(SCHEDULE_ID, minute(1))
    assert second == scheduled_workflow_id(SCHEDULE_ID, minute(2))  # kept in the buffer
    assert third == scheduled_workflow_id(SCHEDULE_ID, minute(3))
    # It started once the first closed at 00:02:20 (looked at every BUFFER_POLL), not at its own time.
    assert minute(2) + timedelta(seconds=20) <= t2 <= minute(2) + timedelta(seconds=24)
    assert described["counts"]["skipped_overlap"] == 0


async def test_terminate_other_stops_the_running_action_first(env: LocalEnvironment) -> None:
    world.run_time = timedelta(hours=1)
    await run_until_deleted(env, definition(overlap="terminate_other"), starts=3)
    assert world.stopped[:2] == [
        (scheduled_workflow_id(SCHEDULE_ID, minute(1)), True),
        (scheduled_workflow_id(SCHEDULE_ID, minute(2)), True),
    ]


async def test_a_refused_start_is_a_skipped_action_with_its_reason_not_a_retry(env: LocalEnvironment) -> None:
    world.refuse = {scheduled_workflow_id(SCHEDULE_ID, minute(2))}
    described = await run_until_deleted(env, definition(), starts=3)
    assert world.attempts.count(scheduled_workflow_id(SCHEDULE_ID, minute(2))) == 1
    assert described["counts"]["started"] == 3 and described["counts"]["refused"] == 1
    (skip,) = described["recent_skips"]
    assert skip["reason"] == "refused: quota: 1 at once"
    assert skip["workflow_id"] == "report-2026-01-01T00:02:00Z"


async def test_pause_trigger_backfill_unpause_and_what_became_of_each(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(Schedule.run, definition(every=3600), id=WORKFLOW_ID)
    paused = await request("pause", note="maintenance")
    triggered = await request("trigger")
    filled = await request(
        "backfill", start="2025-12-31T21:00:00Z", end="2025-12-31T23:00:00Z", overlap="allow_all"
    )
    await env.idle()
    assert (await handle.query(Schedule.request, paused))["outcome"] == "paused"
    outcome = (await handle.query(Schedule.request, triggered))["outcome"]
    assert outcome.startswith("started report-2026-01-01T00:00:3")  # now, paused or not
    assert (await handle.query(Schedule.request, filled))["outcome"] == "backfill: 3 started, 0 buffered"
    described = await handle.query(Schedule.describe)
    assert described["state"] == "paused" and described["note"] == "maintenance"
    assert [workflow_id for workflow_id, _ in world.started][1:] == [
        "report-2025-12-31T21:00:00Z",
        "report-2025-12-31T22:00:00Z",
        "report-2025-12-31T23:00:00Z",
    ]
    # The same request again (a caller that lost the answer) is taken once.
    await env.get_workflow_handle(WORKFLOW_ID).signal("trigger", {"request_id": triggered})
    unpaused = await request("unpause")
    await env.idle()
    assert (await handle.query(Schedule.request, unpaused))["outcome"] == "unpaused"
    assert len(world.started) == 4
    assert await handle.query(Schedule.request, "never-sent") is None


async def test_a_paused_schedule_counts_its_times_as_skipped(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(Schedule.run, definition(paused=True, note="off"), id=WORKFLOW_ID)
    running = asyncio.create_task(handle.result())  # awaiting the result lets virtual time go by

    async def three_skipped() -> None:
        assert (await handle.query(Schedule.describe))["counts"]["skipped_paused"] >= 3

    async for attempt in AsyncRetrying(stop=stop_after_delay(30), wait=wait_fixed(0.01), reraise=True):
        with attempt:
            await three_skipped()
    await request("delete")
    described = await running
    assert world.started == [] and described["counts"]["skipped_paused"] >= 3
    assert described["note"] == "off" and described["recent_skips"][0]["reason"] == "paused"


async def test_bad_requests_are_refused_and_the_schedule_goes_on(env: LocalEnvironment) -> None:
    handle = await env.start_workflow(Schedule.run, definition(every=3600), id=WORKFLOW_ID)
    backwards = await request("backfill", start="2026-01-01T00:00:00Z", end="2025-01-01T00:00:00Z")
    naive = await request("backfill", start="2026-01-01T00:00:00", end="2026-01-01T01:00:00")
    odd = await request("trigger", overlap="sometimes")
    await env.get_workflow_handle(WORKFLOW_ID).signal("pause", "not an object")
    await env.idle()
    outcomes = {r: (await handle.query(Schedule.request, r))["outcome"] for r in (backwards, naive, odd)}
    assert outcomes[backwards] == "refused: a backfill's end must not be before its start"
    assert outcomes[naive] == "refused: a backfill's start and end must be timezone-aware"
    assert outcomes[odd].startswith("refused: overlap:")
    assert (await handle.query(Schedule.describe))["state"] == "active"


async def test_it_continues_as_new_and_keeps_its_state(
    env: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedule_workflow, "STEPS_PER_RUN", 4)
    handle = await env.start_workflow(Schedule.run, definition(), id=WORKFLOW_ID)
    first_run = handle.run_id
    world.delete_after = 9
    described = await handle.result()
    assert env.get_workflow_handle(WORKFLOW_ID).run_id != first_run
    assert [workflow_id for workflow_id, _ in world.started] == [
        scheduled_workflow_id(SCHEDULE_ID, minute(n)) for n in range(1, 10)
    ]
    assert described["counts"]["started"] == 9
    assert T0 <= datetime.fromisoformat(described["created_at"]) < T0 + timedelta(seconds=1)


async def test_after_an_outage_times_within_the_catchup_window_run_once_and_older_ones_are_missed(
    env: LocalEnvironment,
) -> None:
    # As the schedule finds itself when its cell comes back: it last decided 23:50, and it is 00:00:30.
    before = ScheduleState(schedule_id=SCHEDULE_ID, last_processed_time=minute(-10))
    memory = schedule_workflow.ScheduleMemory(created_at=minute(-60), state=before)
    schedule = definition(overlap="allow_all", catchup_window=timedelta(minutes=5))
    world.delete_after = 7  # the five caught up, then 00:01 and 00:02 on time
    handle = await env.start_workflow(Schedule.run, schedule, memory, id=WORKFLOW_ID)
    described = await handle.result()
    assert [workflow_id for workflow_id, _ in world.started] == [
        scheduled_workflow_id(SCHEDULE_ID, minute(n)) for n in range(-4, 3)
    ]
    assert described["counts"]["missed_catchup"] == 5  # 23:51 to 23:55, more than 5 minutes late
    assert {skip["reason"] for skip in described["recent_skips"]} == {"missed_catchup"}
    assert len(world.attempts) == len(set(world.attempts))
