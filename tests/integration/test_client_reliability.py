"""The tenant client through a RabbitMQ restart (SIGKILL, then started again): requests sent during the
outage are answered once it is back, a waiting ``result()`` sees a close it could not hear, and nothing
is done twice; past its request timeout the client says the service is unavailable."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aio_pika
import pytest

from perdure.platform.core import history as h
from perdure.platform.core.outbox import RunClosed
from perdure.platform.core.payloads import default_converter
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.protocol.vhost_layout import INGRESS_QUEUE, RESULTS_EXCHANGE
from perdure.platform.tenancy.model import Quota
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url
from perdure.tenants import ServiceUnavailableError
from perdure.tenants.client import Client

from .cell_app import Gated, GatedActivity, ThreeSteps
from .cell_harness import TenantCell, count_lines, eventually, run_perdure
from .conftest import TenantCellFactory

pytestmark = pytest.mark.exclusive  # it kills RabbitMQ, and bounds times


def _kill_rabbitmq(tenants: TenantCell) -> None:
    pid = int((tenants.cell.settings.stack_dir / "rabbitmq" / "rabbitmq.pid").read_text().strip())
    os.killpg(pid, signal.SIGKILL)


async def _start_rabbitmq(tenants: TenantCell) -> None:
    code, out, err = await run_perdure(tenants, "stack", "up")
    assert code == 0, out + err


async def test_the_client_rides_out_a_rabbitmq_restart_and_does_nothing_twice(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    ledger = tmp_path / "ledger"
    async with await Client.connect(tenants.connection_string("a"), request_timeout=120) as client:
        gated = await client.start_workflow(Gated.run, str(ledger), "g", id="gated")

        async def waiting_for_the_signal() -> None:
            assert count_lines(ledger) == {"g-1": 1, "g-2": 1}
            assert (await gated.describe()).pending_activities == 0

        await eventually(waiting_for_the_signal)
        result = asyncio.create_task(gated.result(timeout=180))
        _kill_rabbitmq(tenants)
        # Sent while the broker is down: answered once it is back, each taken once.
        signalled = asyncio.create_task(gated.signal(Gated.proceed))
        started = asyncio.create_task(client.start_workflow(ThreeSteps.run, str(ledger), "t", id="during"))
        await asyncio.sleep(2)  # the outage lasts: the requests are being retried meanwhile
        assert not signalled.done() and not started.done()
        await _start_rabbitmq(tenants)
        await asyncio.wait_for(signalled, 120)
        during = await asyncio.wait_for(started, 120)
        assert await result == ["g-1-done", "g-2-done", "g-3-done"]
        assert await during.result(timeout=120) == ["t-1-done", "t-2-done", "t-3-done"]
    # A broker killed outright may forget acknowledgements it had not written yet, and hand an activity
    # task out again: activities run at least once, at most twice here; histories record each once.
    ran = count_lines(ledger)
    assert ran.keys() == {"g-1", "g-2", "g-3", "t-1", "t-2", "t-3"} and max(ran.values()) <= 2
    ops = await OpsClient.connect(tenants.cell.settings, tenants.a.record.name)
    try:
        for workflow_id in ("gated", "during"):
            kinds = [type(e) for e in await ops.history(workflow_id)]
            assert kinds.count(h.ActivityTaskCompleted) == 3 and kinds.count(h.WorkflowExecutionStarted) == 1
        gated_history = await ops.history("gated")
        assert [type(e) for e in gated_history].count(h.WorkflowExecutionSignaled) == 1
    finally:
        await ops.close()


async def test_past_its_request_timeout_the_client_says_the_service_is_unavailable(
    make_tenant_cell: TenantCellFactory,
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    async with await Client.connect(tenants.connection_string("a"), request_timeout=3) as client:
        _kill_rabbitmq(tenants)
        try:
            began = time.monotonic()
            with pytest.raises(ServiceUnavailableError, match="did not answer a start request in 3 s"):
                await client.start_workflow(ThreeSteps.run, "unused", "u", id="unavailable")
            assert 3 <= time.monotonic() - began < 10
        finally:
            await _start_rabbitmq(tenants)


async def test_an_outcome_reached_while_rabbitmq_is_down_is_reported_once_it_is_back(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    """The worker cannot report an activity that finishes during the outage; it keeps the outcome and
    sends it once the broker is back (and its channels restored), rather than leaving the run to the
    activity's timeout (30 minutes here) and a second execution."""
    tenants = await make_tenant_cell({"a": Quota()})
    ledger = tmp_path / "ledger"
    async with await Client.connect(tenants.connection_string("a"), request_timeout=120) as client:
        handle = await client.start_workflow(GatedActivity.run, str(ledger), "g", id="gated-activity")
        await eventually(lambda: _ran(ledger, {"g-began": 1}))
        _kill_rabbitmq(tenants)
        await asyncio.to_thread(Path(f"{ledger}.g.open").touch)  # the activity finishes in the outage
        await eventually(lambda: _ran(ledger, {"g-began": 1, "g-done": 1}))
        await _start_rabbitmq(tenants)
        assert await handle.result(timeout=120) == "g-done"
    # A broker killed outright may forget the task's acknowledgement and hand it out again: the worker
    # that took it knows the attempt and does not run it twice; the history records one completion.
    assert count_lines(ledger) == {"g-began": 1, "g-done": 1}
    ops = await OpsClient.connect(tenants.cell.settings, tenants.a.record.name)
    try:
        kinds = [type(e) for e in await ops.history("gated-activity")]
        assert kinds.count(h.ActivityTaskCompleted) == 1
        assert h.ActivityTaskRetryScheduled not in kinds and h.ActivityTaskTimedOut not in kinds
    finally:
        await ops.close()


async def _ran(ledger: Path, expected: dict[str, int]) -> None:
    assert count_lines(ledger) == expected


async def test_a_silent_namespace_is_asked_again_less_and_less_often(
    make_tenant_cell: TenantCellFactory,
) -> None:
    """A request the ingress does not answer waits in its durable queue: the client sends a copy after
    10 s of silence, then waits twice as long for the next (a busy namespace would otherwise be buried
    under copies, each one work for admission), and gives up at its request timeout."""
    tenants = await make_tenant_cell({"a": Quota()})
    for process in tenants.cell.processes:  # no admission: nothing takes or answers the requests
        process.kill()
        await process.wait()
    async with await Client.connect(tenants.connection_string("a"), request_timeout=35) as client:
        with pytest.raises(ServiceUnavailableError, match="did not answer a start request in 35 s"):
            await client.start_workflow(ThreeSteps.run, "unused", "s", id="silent")
    platform = await aio_pika.connect(
        namespace_amqp_url(tenants.cell.settings, tenants.cell.cell, tenants.a.record.vhost)
    )
    try:
        ingress = await (await platform.channel()).declare_queue(INGRESS_QUEUE, passive=True)
        # At 0 s, after 10 s of silence, and after 20 more; a steady pace would have sent 4 by 35 s.
        assert ingress.declaration_result.message_count == 3
    finally:
        await platform.close()


async def test_a_close_announced_between_two_short_waits_is_not_missed(
    make_tenant_cell: TenantCellFactory,
) -> None:
    """``result(timeout=...)`` called again and again (a caller polling): a close announced while no call
    waits is kept for the next one, and a close announced while a call waits for the ingress to answer
    is taken at once. The ingress here answers nothing (no admission), as a namespace whose ingress is
    buried under a backlog would not in time."""
    tenants = await make_tenant_cell({"a": Quota()})
    for process in tenants.cell.processes:
        process.kill()
        await process.wait()
    platform = await aio_pika.connect(
        namespace_amqp_url(tenants.cell.settings, tenants.cell.cell, tenants.a.record.vhost)
    )
    converter = default_converter

    async def announce(workflow_id: str, run_id: str, value: str) -> None:
        closed = RunClosed(
            namespace="a",
            workflow_id=workflow_id,
            run_id=run_id,
            status="completed",
            result=converter.to_payload(value),
        )
        channel = await platform.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(RESULTS_EXCHANGE, ensure=False)
        await exchange.publish(
            aio_pika.Message(closed.model_dump_json().encode(), type=closed.kind),
            routing_key=closed.routing_key,
        )
        await channel.close()

    try:
        async with await Client.connect(tenants.connection_string("a"), request_timeout=120) as client:
            polled = client.get_workflow_handle("polled", run_id="run-1")
            with pytest.raises(TimeoutError):
                await polled.result(timeout=1)
            await announce("polled", "run-1", "heard while nobody waited")
            assert await polled.result(timeout=10) == "heard while nobody waited"

            waiting = client.get_workflow_handle("waiting", run_id="run-2")
            result = asyncio.create_task(waiting.result(timeout=30))
            with pytest.raises(TimeoutError):  # the call is waiting (its ingress answers nothing)
                await asyncio.wait_for(asyncio.shield(result), 1)
            began = time.monotonic()
            await announce("waiting", "run-2", "heard while waiting")
            assert await result == "heard while waiting"
            assert time.monotonic() - began < 5
    finally:
        await platform.close()
