"""Outages of the platform's dependencies, on the real services: the engine stops where the store refuses
writes and commits nothing past them, says so once, and goes on by itself when the store is back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from perdure.platform.core import history as h
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.protocol.cell_wire import engine_group
from perdure.platform.tenancy.model import Quota
from perdure.tenants.client import Client

from .cell_app import FanOut, ThreeSteps
from .cell_harness import CellProcess, TenantCell, eventually, run_perdure
from .conftest import TenantCellFactory

pytestmark = pytest.mark.exclusive  # it kills Kafka, MongoDB and RabbitMQ


async def _committed(kafka_admin: AIOKafkaAdminClient, tenants: TenantCell) -> dict[TopicPartition, int]:
    offsets = await kafka_admin.list_consumer_group_offsets(engine_group(tenants.cell.cell))
    return {tp: meta.offset for tp, meta in offsets.items()}


def _events(lines: list[str], dependency: str) -> list[dict[str, object]]:
    return [e for e in map(json.loads, lines) if e.get("dependency") == dependency]


async def test_the_engine_waits_out_a_database_outage_committing_nothing_and_says_so_once(
    make_tenant_cell: TenantCellFactory, tmp_path: Path, kafka_admin: AIOKafkaAdminClient
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    process = tenants.cell.processes[0]
    ledger = tmp_path / "ledger"
    outage_seconds = 8.0
    async with await Client.connect(tenants.connection_string("a"), request_timeout=120) as client:
        assert await client.execute_workflow(ThreeSteps.run, str(ledger), "w", id="warm") == [
            "w-1-done",
            "w-2-done",
            "w-3-done",
        ]
        fan = await client.start_workflow(FanOut.run, str(ledger), "f", 5, 2.0, id="fan")

        async def running() -> None:
            assert (await fan.describe()).pending_activities == 5

        await eventually(running)
        database = int((tenants.cell.settings.stack_dir / "mongodb" / "mongodb.pid").read_text().strip())
        os.killpg(database, signal.SIGKILL)
        began = time.monotonic()
        try:
            # The activities end during the outage: their results reach Kafka, the engine cannot
            # write them and reads nothing further.
            await process.wait_for_log(r'"a dependency is unreachable.*"dependency": "mongodb"', timeout=30)
            seen = time.monotonic()
            stalled = await _committed(kafka_admin, tenants)
            await asyncio.sleep(outage_seconds)  # the outage lasts on
            assert await _committed(kafka_admin, tenants) == stalled  # nothing committed past it
        finally:
            code, out, err = await run_perdure(tenants, "stack", "up")
            assert code == 0, out + err
        assert await fan.result(timeout=120) == 5
    lasted = time.monotonic() - began
    away = _events(process.lines("a dependency is unreachable"), "mongodb")
    back = _events(process.lines("a dependency is back"), "mongodb")
    print(
        f"a database outage of {lasted:.1f} s: {len(away)} warning, back after {back[0]['outage_seconds']} s"
    )
    assert len(away) == 1 and len(back) == 1
    # Told from when the process first saw it (a request waits 10 s for the database to answer).
    assert outage_seconds <= float(back[0]["outage_seconds"]) <= lasted  # type: ignore[arg-type]
    assert seen - began <= 15
    # Quiet: a line or two of the services' own (FerretDB's end), not one per attempt.
    noisy = [line for line in process.lines('"level": "error"') if "worker output" not in line]
    assert len(noisy) <= 3, noisy
    # The results waited in Kafka, uncommitted, and were applied after the outage (the engine commits
    # after its batch's write, without holding up the batch: the commit may trail the run's close).

    async def committed_past_the_outage() -> None:
        assert sum((await _committed(kafka_admin, tenants)).values()) > sum(stalled.values())

    await eventually(committed_past_the_outage)
    ops = await OpsClient.connect(tenants.cell.settings, tenants.a.record.name)
    try:
        events = await ops.history("fan")
    finally:
        await ops.close()
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    assert [type(e) for e in events].count(h.ActivityTaskCompleted) == 5


async def test_kafka_and_rabbitmq_outages_are_told_once_each_and_work_goes_on_after_them(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    process = tenants.cell.processes[0]
    ledger = tmp_path / "ledger"
    stack = tenants.cell.settings.stack_dir
    async with await Client.connect(tenants.connection_string("a"), request_timeout=180) as client:
        for service in ("kafka", "rabbitmq"):
            assert await client.execute_workflow(ThreeSteps.run, str(ledger), service, id=f"before-{service}")
            pid = int((stack / service / f"{service}.pid").read_text().strip())
            os.killpg(pid, signal.SIGKILL)
            try:
                await process.wait_for_log(
                    rf'"a dependency is unreachable.*"dependency": "{service}"', timeout=60
                )

                async def reported(service: str = service) -> None:
                    code, out, err = await run_perdure(tenants, "cell", "processes", tenants.cell.cell)
                    assert code == 0 and f"unhealthy\tcannot reach {service}" in out, out + err

                await eventually(reported)  # what ops see of it
            finally:
                code, out, err = await run_perdure(tenants, "stack", "up")
                assert code == 0, out + err
            await process.wait_for_log(rf'"a dependency is back".*"dependency": "{service}"', timeout=120)
            after = await client.execute_workflow(
                ThreeSteps.run, str(ledger), f"{service}-after", id=f"after-{service}"
            )
            assert after == [f"{service}-after-1-done", f"{service}-after-2-done", f"{service}-after-3-done"]
    for service in ("kafka", "rabbitmq"):
        away = _events(process.lines("a dependency is unreachable"), service)
        back = _events(process.lines("a dependency is back"), service)
        print(
            f"{service}: {len(away)} warning(s), back after {[b['outage_seconds'] for b in back]} s, "
            f"{[b['retries'] for b in back]} attempts retried in it"
        )
        assert len(away) == len(back) == 1, (away, back)
        # Reconnects back off (infra/amqp_reconnect.py, infra/kafka_backoff.py): a few attempts a second
        # in all, where the Kafka client's own fixed 100 ms pace made over a hundred.
        retries, lasted = str(back[0]["retries"]), str(back[0]["outage_seconds"])
        assert int(retries) < 15 * float(lasted)
    loud = [
        line
        for line in process.lines('"level": "')
        if ('"level": "error"' in line or '"level": "warning"' in line) and "worker output" not in line
    ]
    print(f"{len(loud)} warning and error lines in all:", *loud[:20], sep="\n")
    assert len(loud) <= 10


async def test_a_cell_process_started_during_a_kafka_outage_waits_for_it_then_serves(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    """An orchestrator may start a replacement while Kafka is down: it waits the outage out (and stops at
    once if told to meanwhile), rather than exiting and leaving the cell a process short. Metering too."""
    tenants = await make_tenant_cell({"a": Quota()})
    first = tenants.cell.processes[0]
    stack = tenants.cell.settings.stack_dir
    waiting_for_kafka = r'"a dependency is unreachable.*"dependency": "kafka"'
    kafka = int((stack / "kafka" / "kafka.pid").read_text().strip())
    os.killpg(kafka, signal.SIGKILL)
    try:
        late, stopped = (CellProcess(tenants.cell, n, ready=waiting_for_kafka) for n in ("late", "told"))
        metering = CellProcess(tenants.cell, "metering-late", ("metering", "run"), waiting_for_kafka)
        tenants.cell.processes.extend([late, stopped, metering])
        await asyncio.gather(late.start(), stopped.start(), metering.start())
        stopped.kill(signal.SIGTERM)
        assert await stopped.wait(timeout=15) == 0
        assert stopped.lines("stopped before the cell started")
        with pytest.raises(TimeoutError):  # still waiting, however long the outage lasts
            await late.wait(timeout=10)
        assert metering.proc is not None and metering.proc.returncode is None
    finally:
        code, out, err = await run_perdure(tenants, "stack", "up")
        assert code == 0, out + err
    await late.wait_for_log(r'"cell running"', timeout=120)
    await metering.wait_for_log(r'"metering running"', timeout=120)
    first.kill()  # the late process is now the cell's only one: it serves every partition
    await first.wait()
    await late.wait_for_log(r'"partitions assigned".*"partitions": \[0, 1\]', timeout=120)  # both
    async with await Client.connect(tenants.connection_string("a"), request_timeout=120) as client:
        result = await client.execute_workflow(ThreeSteps.run, str(tmp_path / "ledger"), "late", id="late")
    assert result == ["late-1-done", "late-2-done", "late-3-done"]
