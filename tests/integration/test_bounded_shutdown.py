"""SIGTERM stops every process within its bound (``PERDURE_SHUTDOWN_SECONDS``): a cell whose broker froze,
a cell whose tenant left a process holding its worker's output, a tenant's worker whose activity hangs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from perdure.infra.bounded_stop import EXIT_CODE_OVERRAN, WATCHDOG_GRACE_SECONDS
from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.platform.stores.databases import Databases
from perdure.platform.tenancy.model import Quota
from perdure.tenants.client import Client

from .cell_app import HangsOnce, LeavesAProcess, ThreeSteps
from .cell_harness import PERDURE, REPO, count_lines, eventually
from .conftest import TenantCellFactory

pytestmark = pytest.mark.exclusive  # it freezes RabbitMQ (SIGSTOP), and bounds times


def _alive(pid: int) -> bool:
    """Whether the process runs (a killed one waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_a_cell_stops_within_its_bound_while_rabbitmq_is_frozen(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    bound = 6.0
    tenants = await make_tenant_cell({"a": Quota()}, PERDURE_SHUTDOWN_SECONDS=str(bound))
    process = tenants.cell.processes[0]
    ledger = str(tmp_path / "ledger")
    async with await Client.connect(tenants.connection_string("a")) as client:
        # Admission, the engine, the relay and the worker are all connected to the broker.
        assert await client.execute_workflow(ThreeSteps.run, ledger, "t", id="before") == [
            "t-1-done",
            "t-2-done",
            "t-3-done",
        ]
    rabbitmq = int((tenants.cell.settings.stack_dir / "rabbitmq" / "rabbitmq.pid").read_text().strip())
    os.killpg(rabbitmq, signal.SIGSTOP)  # every AMQP call now waits, none fails
    try:
        began = time.monotonic()
        process.kill(signal.SIGTERM)
        code = await process.wait(timeout=bound + WATCHDOG_GRACE_SECONDS + 20)
        took = time.monotonic() - began
    finally:
        os.killpg(rabbitmq, signal.SIGCONT)
    print(f"a cell with a frozen broker stopped in {took:.1f} s (bound {bound:.0f} s), exit code {code}")
    assert took <= bound + 2, took
    assert code == EXIT_CODE_OVERRAN  # it says it did not stop cleanly
    [overran] = process.lines("stop overran its bound")
    abandoned = json.loads(overran)["abandoned"]
    # What waits on the broker is abandoned, at its share of the bound; Kafka's producers still ran.
    assert abandoned and "kafka producers" not in abandoned, abandoned
    assert not process.lines("still alive past its stop bound")  # it ended itself, not the watchdog


async def test_a_process_left_behind_by_tenant_code_does_not_hold_up_the_stop(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    bound = 20.0
    tenants = await make_tenant_cell({"a": Quota()}, PERDURE_SHUTDOWN_SECONDS=str(bound))
    process = tenants.cell.processes[0]
    async with await Client.connect(tenants.connection_string("a")) as client:
        left = await client.execute_workflow(LeavesAProcess.run, str(tmp_path / "ledger"), id="leave")
    assert _alive(left)  # in a session of its own, holding the worker's output open
    began = time.monotonic()
    process.kill(signal.SIGTERM)
    code = await process.wait(timeout=bound + WATCHDOG_GRACE_SECONDS + 20)
    took = time.monotonic() - began
    print(f"a cell whose tenant left a process stopped in {took:.1f} s (bound {bound:.0f} s)")
    assert code == 0 and took < bound
    [stopped] = process.lines('"cell stopped"')
    assert json.loads(stopped)["abandoned"] == []
    assert not _alive(left)  # the worker's cgroup ended it with the worker


async def test_a_workers_hung_activity_is_handed_back_within_the_bound_and_retried_at_once(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"own": Quota()}, tenant_hosted=frozenset({"own"}))
    ledger = tmp_path / "ledger"
    bound = 3.0

    async def worker() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(PERDURE),
            "worker",
            "run",
            "--app",
            "tests.integration.cell_app:app",
            "--connect",
            tenants.connection_string("own"),
            "--shutdown-seconds",
            str(bound),
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
            stderr=asyncio.subprocess.PIPE,
        )

    async with await Client.connect(tenants.connection_string("own")) as client:
        first = await worker()
        handle = await client.start_workflow(HangsOnce.run, str(ledger), "h", id="hangs")

        async def hung() -> None:
            assert count_lines(ledger) == {"h-hung": 1}

        await eventually(hung)
        began = time.monotonic()
        first.send_signal(signal.SIGTERM)
        _, errors = await asyncio.wait_for(first.communicate(), bound + WATCHDOG_GRACE_SECONDS + 20)
        took = time.monotonic() - began
        assert first.returncode == 0 and took < bound + 1, (took, errors.decode())
        assert "handed back" in errors.decode()
        second = await worker()
        try:
            # The attempt's timeout is 30 minutes: only the hand-back lets the retry run now.
            assert await handle.result(timeout=60) == "h-done"
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.communicate(), 30)
    print(f"a worker with a hung activity stopped in {took:.1f} s (bound {bound:.0f} s)")
    assert count_lines(ledger) == {"h-hung": 1, "h-done": 1}


async def test_a_cell_stops_cleanly_while_letting_go_of_a_namespace_just_deleted(
    make_tenant_cell: TenantCellFactory, tmp_path: Path, rabbitmq_admin: RabbitMQAdmin
) -> None:
    bound = 20.0
    tenants = await make_tenant_cell({"a": Quota(), "b": Quota()}, PERDURE_SHUTDOWN_SECONDS=str(bound))
    process = tenants.cell.processes[0]
    ledger = str(tmp_path / "ledger")
    for label in ("a", "b"):  # both namespaces' workers, consumers and channels are in use
        async with await Client.connect(tenants.connection_string(label)) as client:
            assert await client.execute_workflow(ThreeSteps.run, ledger, label, id="warm") == [
                f"{label}-1-done",
                f"{label}-2-done",
                f"{label}-3-done",
            ]
    # What deleting a namespace does to it: its record marked deleted, its vhost and user gone.
    gone = tenants.a.record
    databases = Databases.connect(tenants.cell.settings)
    try:
        await databases.control.update_namespace(gone.name, status="deleted", deleted_at=datetime.now(UTC))
    finally:
        await databases.close()
    await rabbitmq_admin.delete_vhost(gone.vhost)
    await process.wait_for_log(rf'"worker stopped: its namespace is gone".*"namespace": "{gone.name}"')
    began = time.monotonic()
    process.kill(signal.SIGTERM)  # while the cell lets go of it
    code = await process.wait(timeout=bound + WATCHDOG_GRACE_SECONDS + 20)
    took = time.monotonic() - began
    print(f"a cell letting go of a deleted namespace stopped in {took:.1f} s (bound {bound:.0f} s)")
    [stopped] = process.lines('"cell stopped"')
    assert code == 0 and json.loads(stopped)["abandoned"] == [], stopped
