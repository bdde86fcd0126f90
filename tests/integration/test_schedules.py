"""Schedules on the real services, steered by ``perdure schedule``: a schedule firing every 2 s through a
SIGKILL of its cell (each action time inside the catch-up window started exactly once, those older
counted as missed), pause, unpause, trigger, backfill and delete, bad input refused before anything
starts, an overlap policy with a slow workflow, and the starts going in through the namespace's
admission (its concurrency quota, its metering)."""

from __future__ import annotations

import asyncio
import collections
import json
import re
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.reconcile import metered
from perdure.platform.core.schedule_spec import IntervalSpec, ScheduleSpec, action_times_between
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.protocol.ingress_wire import ScheduleCommand
from perdure.platform.tenancy.model import Quota
from perdure.tenants import Client, MalformedRequestError, ScheduleAlreadyExistsError, ScheduleNotFoundError

from .cell_app import Noop
from .cell_harness import TenantCell, eventually, run_perdure
from .conftest import TenantCellFactory

EVERY_2S = ScheduleSpec(intervals=(IntervalSpec(every=timedelta(seconds=2)),))
# How long the cell stays down: longer than the short catch-up window below, so that it misses some.
OUTAGE = 8.0


@pytest.fixture
async def schedule_cell(make_tenant_cell: TenantCellFactory) -> TenantCell:
    """A running cell with the control plane bootstrapped on it, and two tenants' namespaces: ``t`` with
    the default quota, ``q`` that runs one workflow at a time."""
    tenants = await make_tenant_cell({"t": Quota(), "q": Quota(max_concurrent_workflows=1)})
    code, _, err = await run_perdure(tenants, "controlplane", "bootstrap", "--cell", tenants.cell.cell)
    assert code == 0, err
    return tenants


async def schedule(tenants: TenantCell, *args: str) -> str:
    """``perdure schedule ARGS``, which must succeed; its output."""
    code, out, err = await run_perdure(tenants, "schedule", *args)
    assert code == 0, f"perdure schedule {' '.join(args)}: {err}"
    return out


async def described(tenants: TenantCell, namespace: str, schedule_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(await schedule(tenants, "describe", namespace, schedule_id, "--json"))
    return shown


async def runs_of(tenants: TenantCell, namespace: str, schedule_id: str) -> list[dict[str, Any]]:
    """Every run in ``namespace`` a schedule started (one per workflow id if none was doubled)."""
    async with await OpsClient.connect(tenants.cell.settings, namespace) as ops:
        runs = await ops.list(limit=10_000)
    return [run for run in runs if run["workflow_id"].startswith(f"{schedule_id}-")]


def nominal_time(schedule_id: str, workflow_id: str) -> datetime:
    stamp = workflow_id.removeprefix(f"{schedule_id}-")
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


async def test_a_schedule_every_2s_misses_and_doubles_nothing_through_a_sigkill_of_its_cell(
    schedule_cell: TenantCell,
) -> None:
    tenants = schedule_cell
    namespace = tenants.t.record.name
    for schedule_id, window in (("every2", "10m"), ("short", "5s")):
        out = await schedule(
            tenants,
            "create",
            namespace,
            schedule_id,
            "--workflow",
            "Noop",
            "--input",
            '"tick"',
            "--every",
            "2s",
            "--overlap",
            "allow_all",
            "--catchup-window",
            window,
        )
        assert f"schedule {schedule_id} created in namespace {namespace} (active): every 2s" in out

    async def started_since(moment: datetime, count: int) -> None:
        runs = await runs_of(tenants, namespace, "every2")
        assert sum(nominal_time("every2", run["workflow_id"]) > moment for run in runs) >= count

    await eventually(lambda: started_since(datetime.min.replace(tzinfo=UTC), 3), timeout=90)
    process = tenants.cell.processes[0]
    process.kill(signal.SIGKILL)
    await process.wait()
    killed_at = datetime.now(UTC)
    await asyncio.sleep(OUTAGE)  # the outage itself: the cell is down this long
    await tenants.cell.start_process().start()
    back_at = datetime.now(UTC)
    # Caught up (the times of the outage), then on time again.
    await eventually(lambda: started_since(back_at, 3), timeout=90)
    for schedule_id in ("every2", "short"):
        assert "paused" in await schedule(tenants, "pause", namespace, schedule_id, "--note", "checked")

    for schedule_id, window_missed in (("every2", False), ("short", True)):
        shown = await described(tenants, namespace, schedule_id)
        counts = shown["counts"]
        expected = action_times_between(
            EVERY_2S,
            datetime.fromisoformat(shown["created_at"]),
            datetime.fromisoformat(shown["last_processed_time"]),
        )
        runs = await runs_of(tenants, namespace, schedule_id)
        started = collections.Counter(nominal_time(schedule_id, run["workflow_id"]) for run in runs)
        assert max(started.values()) == 1, f"{schedule_id}: doubled {started.most_common(3)}"
        assert counts["started"] == len(started) and counts["refused"] == 0
        # Every action time is accounted for once: started, missed (older than the window when the
        # schedule woke), or skipped at the end because it was paused.
        assert len(started) + counts["missed_catchup"] + counts["skipped_paused"] == len(expected)
        assert set(started) <= set(expected)
        outage = [t for t in expected if killed_at < t < back_at]
        assert len(outage) >= 3
        if window_missed:
            assert counts["missed_catchup"] >= 1
            missed = set(expected) - set(started)
            assert min(missed) < back_at and any(t in missed for t in outage)
        else:
            assert counts["missed_catchup"] == 0
            assert sorted(started) == expected[: len(expected) - counts["skipped_paused"]]
            assert set(outage) <= set(started)  # the outage's times ran late, once each


async def test_pause_unpause_trigger_backfill_and_delete_from_the_cli(schedule_cell: TenantCell) -> None:
    tenants = schedule_cell
    namespace = tenants.t.record.name
    await tenants.cell.metering_process().start()
    out = await schedule(
        tenants, "create", namespace, "steer", "--workflow", "Noop", "--input", '"x"', "--every", "2s"
    )
    assert "next action times: " in out
    listed = await schedule(tenants, "list", namespace)
    assert listed.splitlines() == ["steer\tNoop\tevery 2s\tactive"]

    async def runs_at_least(count: int) -> list[dict[str, Any]]:
        runs = await runs_of(tenants, namespace, "steer")
        assert len(runs) >= count
        return runs

    await eventually(lambda: runs_at_least(2), timeout=60)
    assert (await schedule(tenants, "pause", namespace, "steer", "--note", "maintenance")).strip() == (
        "schedule steer: paused"
    )
    shown = await described(tenants, namespace, "steer")
    assert shown["state"] == "paused" and shown["note"] == "maintenance"
    assert json.loads(await schedule(tenants, "list", namespace, "--json"))[0]["state"] == "paused"
    before = len(await runs_of(tenants, namespace, "steer"))

    # Trigger runs now, paused or not.
    out = await schedule(tenants, "trigger", namespace, "steer")
    assert out.startswith("schedule steer: started steer-"), out
    triggered = out.strip().removeprefix("schedule steer: started ")
    # A backfill of a past minute's first 10 s: six action times, all run now (allow_all).
    start = (datetime.now(UTC) - timedelta(minutes=10)).replace(second=0, microsecond=0)
    end = start + timedelta(seconds=10)
    out = await schedule(
        tenants,
        "backfill",
        namespace,
        "steer",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--overlap",
        "allow_all",
    )
    assert out.strip() == "schedule steer: backfill: 6 started, 0 buffered"
    ids = {run["workflow_id"] for run in await runs_of(tenants, namespace, "steer")}
    filled = {f"steer-{start + timedelta(seconds=s):%Y-%m-%dT%H:%M:%SZ}" for s in range(0, 11, 2)}
    assert filled <= ids and triggered in ids
    assert len(ids - filled) == before + 1  # nothing scheduled ran while paused; the trigger did

    out = await schedule(tenants, "unpause", namespace, "steer", "--note", "done")
    assert out.strip() == "schedule steer: unpaused"
    unpaused_at = datetime.now(UTC)

    async def scheduled_again() -> None:
        runs = await runs_of(tenants, namespace, "steer")
        assert any(nominal_time("steer", run["workflow_id"]) > unpaused_at for run in runs)

    await eventually(scheduled_again, timeout=60)
    shown = await described(tenants, namespace, "steer")
    assert shown["state"] == "active" and shown["counts"]["skipped_paused"] >= 1
    assert shown["recent_actions"][0]["source"] == "scheduled"
    assert {a["source"] for a in shown["recent_actions"]} >= {"scheduled", "backfill"}

    # The same id again is refused, and nothing else starts.
    code, _, err = await run_perdure(
        tenants, "schedule", "create", namespace, "steer", "--workflow", "Noop", "--every", "5s"
    )
    assert code == 1 and err.strip() == (
        f"perdure schedule create: schedule 'steer' exists in namespace '{namespace}' "
        "(delete it first, or choose another id)"
    )
    assert (await schedule(tenants, "delete", namespace, "steer")).strip() == "schedule steer: deleted"
    for command in (("describe", namespace, "steer"), ("pause", namespace, "steer")):
        code, _, err = await run_perdure(tenants, "schedule", *command)
        assert code == 1 and f"no schedule 'steer' in namespace '{namespace}'" in err
    assert (await schedule(tenants, "list", namespace)).strip() == f"no schedules in namespace {namespace}"

    # Each scheduled start was the namespace's own, billed start.
    async def all_billed() -> None:
        runs = await runs_of(tenants, namespace, "steer")
        billed = await metered(tenants.cell.settings, namespace)
        assert billed["workflow_started"] == len(runs), (billed, len(runs))

    await eventually(all_billed, timeout=60)


async def test_bad_input_is_refused_in_one_line_and_nothing_starts(schedule_cell: TenantCell) -> None:
    tenants = schedule_cell
    namespace = tenants.t.record.name
    good = ("--workflow", "Noop", "--every", "2s")
    for args, message in [
        (
            (namespace, "s", "--workflow", "Noop", "--cron", "61 * * * *"),
            "cron '61 * * * *': Bad minute",
        ),
        (
            (namespace, "s", *good, "--time-zone", "Mars/Olympus_Mons"),
            "time_zone 'Mars/Olympus_Mons': unknown time zone (expected an IANA name",
        ),
        ((f"{namespace}-nope", "s", *good), f"no namespace '{namespace}-nope'"),
        (
            (namespace, "s", "--workflow", "NoSuchWorkflow", "--every", "2s"),
            f"namespace '{namespace}' has no workflow type 'NoSuchWorkflow' (it has: ",
        ),
        ((namespace, "s", *good, "--input", "{oops"), "--input is not JSON"),
        ((namespace, "s", *good, "--overlap", "sometimes"), "--overlap 'sometimes': one of skip,"),
        ((namespace, "s", "--workflow", "Noop"), "give the action times: --cron EXPRESSION or --every"),
    ]:
        code, out, err = await run_perdure(tenants, "schedule", "create", *args)
        assert code == 1, (args, out, err)
        assert err.startswith(f"perdure schedule create: {message}") and len(err.splitlines()) == 1, err
    code, _, err = await run_perdure(tenants, "schedule", "trigger", namespace, "nothing")
    assert (
        code == 1
        and err.strip() == f"perdure schedule trigger: no schedule 'nothing' in namespace '{namespace}'"
    )
    assert (await schedule(tenants, "list", namespace)).strip() == f"no schedules in namespace {namespace}"
    system = tenants.cell.settings.system_namespace
    async with await OpsClient.connect(tenants.cell.settings, system) as ops:
        assert await ops.list(workflow_type="Schedule") == []


async def test_skip_counts_overlaps_and_admission_refuses_starts_past_the_quota(
    schedule_cell: TenantCell,
) -> None:
    tenants = schedule_cell
    roomy, one_at_a_time = tenants.t.record.name, tenants.q.record.name
    # A 5 s workflow every 2 s: with skip, the times that come while one runs are skipped.
    await schedule(tenants, "create", roomy, "slow", "--workflow", "Sleeper", "--input", "5", "--every", "2s")
    # allow_all would run them side by side, but the namespace runs one workflow at a time: admission
    # refuses the others, and the schedule records each refusal as a skipped action, not retried.
    await schedule(
        tenants,
        "create",
        one_at_a_time,
        "crowded",
        "--workflow",
        "Sleeper",
        "--input",
        "60",
        "--every",
        "2s",
        "--overlap",
        "allow_all",
    )

    async def counted(namespace: str, schedule_id: str, name: str, at_least: int) -> dict[str, Any]:
        shown = await described(tenants, namespace, schedule_id)
        assert shown["counts"][name] >= at_least, shown["counts"]
        return shown

    slow = await eventually(lambda: counted(roomy, "slow", "skipped_overlap", 3), timeout=90)
    assert slow["counts"]["started"] >= 1
    assert {skip["reason"] for skip in slow["recent_skips"]} == {"overlap"}
    runs = await runs_of(tenants, roomy, "slow")
    assert len(runs) == slow["counts"]["started"] or len(runs) == slow["counts"]["started"] + 1
    assert sum(run["status"] == "running" for run in runs) <= 1  # never two at once

    crowded = await eventually(lambda: counted(one_at_a_time, "crowded", "refused", 2), timeout=90)
    assert crowded["counts"]["started"] == 1
    reasons = [skip["reason"] for skip in crowded["recent_skips"]]
    # (Admission's count of running workflows is its own estimate: the number is not checked.)
    refusal = re.compile(r"refused: quota: \d+ workflows are running; the namespace allows 1 at once")
    assert reasons and all(refusal.fullmatch(reason) for reason in reasons), reasons
    assert len(await runs_of(tenants, one_at_a_time, "crowded")) == 1


async def test_a_tenant_client_makes_steers_and_deletes_its_own_schedules_only(
    schedule_cell: TenantCell,
) -> None:
    tenants = schedule_cell
    mine = tenants.t.record.name
    async with (
        await Client.connect(tenants.connection_string("t")) as client,
        await Client.connect(tenants.connection_string("q")) as other,
    ):
        handle = await client.create_schedule("mine", Noop.run, ["tick"], spec=EVERY_2S, overlap="allow_all")
        with pytest.raises(ScheduleAlreadyExistsError, match="exists in namespace"):
            await client.create_schedule("mine", Noop.run, ["tick"], spec=EVERY_2S)

        async def started(count: int) -> None:
            assert len(await runs_of(tenants, mine, "mine")) >= count

        await eventually(lambda: started(2), timeout=60)
        shown = await handle.describe()
        assert shown["workflow_type"] == "Noop" and shown["counts"]["started"] >= 2
        assert "workflow" not in shown  # where it runs on the control plane is not the tenant's
        assert await handle.pause("for the test") == "paused"
        assert [(s["schedule"], s["state"]) for s in await client.list_schedules()] == [("mine", "paused")]
        assert (await handle.trigger()).startswith("started mine-")

        # Another namespace neither sees nor reaches it, by its id or by an id that names its path.
        assert await other.list_schedules() == []
        for schedule_id in ("mine", f"../{mine}/mine", f"{mine}/mine"):
            with pytest.raises((ScheduleNotFoundError, MalformedRequestError)):
                await other.get_schedule_handle(schedule_id).describe()
            with pytest.raises((ScheduleNotFoundError, MalformedRequestError)):
                await other.get_schedule_handle(schedule_id).delete()
        # A namespace named in the body is ignored: the schedule is the sender's own.
        body = {"schedule_id": "theirs", "workflow_type": "Noop", "spec": EVERY_2S.model_dump(mode="json")}
        await other._call(
            ScheduleCommand(
                request_id="forged", action="create", definition={**body, "namespace": mine, "paused": True}
            )
        )
        assert [s["schedule"] for s in await other.list_schedules()] == ["theirs"]
        assert [s["schedule"] for s in await client.list_schedules()] == ["mine"]
        # The same request id again (a retry after a lost answer) is the same create, not a refusal.
        await other._call(ScheduleCommand(request_id="forged", action="create", definition=body))
        assert len(await other.list_schedules()) == 1

        # Bad input: a clear refusal, and nothing made.
        with pytest.raises(MalformedRequestError, match="has no workflow type 'NoSuchWorkflow'"):
            await client.create_schedule("bad", "NoSuchWorkflow", spec=EVERY_2S)
        with pytest.raises(MalformedRequestError, match="schedule id"):
            await client.create_schedule("no spaces", Noop.run, spec=EVERY_2S)
        with pytest.raises(MalformedRequestError, match="a backfill's end must not be before its start"):
            now = datetime.now(UTC)
            await handle.backfill(now, now - timedelta(minutes=1))
        with pytest.raises(ScheduleNotFoundError):
            await client.get_schedule_handle("never").pause()

        await handle.delete()
        with pytest.raises(ScheduleNotFoundError):
            await handle.describe()
        assert await client.list_schedules() == []
        await other.get_schedule_handle("theirs").delete()
