"""The tenant client through admission into a running cell, on the real services (issue 5)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aio_pika
import pytest

from perdure.platform.protocol.ingress_wire import IngressReply
from perdure.platform.protocol.vhost_layout import CLIENT_QUEUE_PREFIX, INGRESS_DEAD_LETTERS, INGRESS_QUEUE
from perdure.platform.tenancy.model import Quota
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url
from perdure.tenants import (
    ApplicationError,
    PayloadTooLargeError,
    UnknownWorkflowTypeError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from perdure.tenants.client import Client

from .cell_app import Gated, Noop, Sleeper, ThreeSteps
from .cell_harness import PERDURE, TenantCell
from .conftest import TenantCellFactory


@pytest.fixture
async def tenant_cell(make_tenant_cell: TenantCellFactory) -> TenantCell:
    return await make_tenant_cell({"a": Quota(max_payload_bytes=4096), "b": Quota()})


async def test_a_tenant_starts_signals_and_awaits_results(tenant_cell: TenantCell, tmp_path: Path) -> None:
    assert tenant_cell.a.connection_string is not None
    ledger = str(tmp_path / "ledger")
    async with await Client.connect(tenant_cell.a.connection_string) as client:
        result = await client.execute_workflow(ThreeSteps.run, ledger, "x", id="three")
        assert result == ["x-1-done", "x-2-done", "x-3-done"]

        gated = await client.start_workflow(Gated.run, ledger, "g", id="gated")
        with pytest.raises(WorkflowAlreadyStartedError):
            await client.start_workflow(Gated.run, ledger, "g", id="gated")
        # The same request again (a client retry) is the same run, not a refusal.
        retried_id = str(uuid.uuid4())
        first = await client.start_workflow(Sleeper.run, 0.2, id="sleepy", request_id=retried_id)
        again = await client.start_workflow(Sleeper.run, 0.2, id="sleepy", request_id=retried_id)
        assert first.run_id == again.run_id
        assert await first.result(timeout=30) == "woke"
        # result() of a run that closed before the call.
        earlier = client.get_workflow_handle("three")
        assert await earlier.result(timeout=10) == ["x-1-done", "x-2-done", "x-3-done"]

        # Queries are answered by the partition's owner, after what was sent before them.
        assert await gated.query(Gated.released, "before") == "before:no"
        with pytest.raises(
            ApplicationError, match="unknown query 'nope'; the workflow answers: broken, released"
        ):
            await gated.query("nope")
        with pytest.raises(ApplicationError, match="this handler is broken") as failed:
            await gated.query(Gated.broken)
        assert failed.value.type == "QueryFailed"
        await gated.signal(Gated.proceed)
        assert await gated.query(Gated.released, "after") == "after:yes"
        assert await gated.result(timeout=30) == ["g-1-done", "g-2-done", "g-3-done"]
        assert (await gated.describe()).status == "completed"
        # A closed run is still answered (from its history, replayed).
        assert await gated.query(Gated.released, "closed") == "closed:yes"
        with pytest.raises(WorkflowNotFoundError):
            await client.get_workflow_handle("never-started").query(Gated.released, "x")
        listed = {w["workflow_id"] for w in await client.list_workflows(status="completed")}
        assert {"three", "gated", "sleepy"} <= listed


async def test_id_reuse_policies_are_kept_by_the_cell(tenant_cell: TenantCell) -> None:
    """The engine decides a start by the workflow id's latest run and the start's id-reuse policy; the
    refusal names the run in the way, and a start sent again answers with the run it started."""
    assert tenant_cell.a.connection_string is not None
    async with await Client.connect(tenant_cell.a.connection_string) as client:
        first_request = str(uuid.uuid4())
        first = await client.start_workflow(Noop.run, "1", id="reused", request_id=first_request)
        assert await first.result(timeout=30) == "1"
        for policy in ("reject_duplicate", "allow_duplicate_failed_only"):
            with pytest.raises(WorkflowAlreadyStartedError, match=policy) as refused:
                await client.start_workflow(Noop.run, "2", id="reused", id_reuse_policy=policy)
            assert refused.value.run_id == first.run_id
        assert (await client.get_workflow_handle("reused").describe()).run_id == first.run_id
        second = await client.start_workflow(Noop.run, "3", id="reused", id_reuse_policy="allow_duplicate")
        assert second.run_id != first.run_id
        assert await second.result(timeout=30) == "3"
        resent = await client.start_workflow(Noop.run, "1", id="reused", request_id=first_request)
        assert resent.run_id == first.run_id
        assert (await client.get_workflow_handle("reused").describe()).run_id == second.run_id


async def test_bad_starts_get_clear_errors_and_dead_letters(tenant_cell: TenantCell) -> None:
    assert tenant_cell.a.connection_string is not None
    async with await Client.connect(tenant_cell.a.connection_string) as client:
        with pytest.raises(UnknownWorkflowTypeError, match="ThreeSteps"):
            await client.start_workflow("NoSuchWorkflow", id="nope")
        with pytest.raises(PayloadTooLargeError):
            await client.start_workflow(Sleeper.run, "x" * 10_000, id="big")
        with pytest.raises(WorkflowNotFoundError):
            await client.get_workflow_handle("never-started").describe()

        # A body no client would send: an error reply, and the request in the dead-letter queue.
        connection = await aio_pika.connect(tenant_cell.a.connection_string)
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"{not json", reply_to=replies.name, correlation_id="bad-1"),
            routing_key=INGRESS_QUEUE,
        )
        async with replies.iterator() as incoming:
            async for message in incoming:
                reply = IngressReply.model_validate_json(message.body)
                await message.ack()
                break
        await connection.close()
        assert not reply.ok and reply.error is not None and reply.error.type == "malformed"

        # The consumer kept going: a good start right after works.
        assert await client.execute_workflow(Sleeper.run, 0.01, id="after-bad") == "woke"

    settings = tenant_cell.cell.settings
    platform = await aio_pika.connect(
        namespace_amqp_url(settings, tenant_cell.cell.cell, tenant_cell.a.record.vhost)
    )
    parked = await (await platform.channel()).declare_queue(INGRESS_DEAD_LETTERS, passive=True)
    await platform.close()
    assert parked.declaration_result.message_count == 3  # unknown type, oversized, malformed

    # Ops see the namespace's runs by status (and its queues) with `perdure namespace stats`.
    stats = await asyncio.create_subprocess_exec(
        PERDURE,
        "namespace",
        "stats",
        tenant_cell.a.record.name,
        "--json",
        env=tenant_cell.cell.env,
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await stats.communicate()
    assert stats.returncode == 0
    figures = json.loads(output)
    assert figures["runs"]["completed"] == 1 and figures["runs"]["running"] == 0  # "after-bad"
    assert set(figures["queues"]) >= {INGRESS_QUEUE, INGRESS_DEAD_LETTERS}


async def test_tenants_cannot_reach_each_other(tenant_cell: TenantCell, tmp_path: Path) -> None:
    assert tenant_cell.a.connection_string and tenant_cell.b.connection_string
    ledger = str(tmp_path / "ledger")
    async with (
        await Client.connect(tenant_cell.a.connection_string) as a,
        await Client.connect(tenant_cell.b.connection_string) as b,
    ):
        await b.execute_workflow(ThreeSteps.run, ledger, "b", id="b-only")
        # A asks for B's workflow id: it does not exist in A's namespace.
        with pytest.raises(WorkflowNotFoundError):
            await a.get_workflow_handle("b-only").describe()
        assert "b-only" not in {w["workflow_id"] for w in await a.list_workflows()}
        with pytest.raises(WorkflowNotFoundError):
            await a.get_workflow_handle("b-only").query(Gated.released, "a")

        # A forges B's namespace inside its request: the vhost decides, the run lands in A.
        channel = a._channel
        forged = {
            "kind": "start",
            "namespace": tenant_cell.b.record.name,
            "request_id": "forged",
            "workflow_type": "Sleeper",
            "workflow_id": "forged",
            "input": [{"metadata": {"encoding": "json/plain"}, "data": "MC4wMQ=="}],
        }
        answers = await channel.declare_queue(f"{CLIENT_QUEUE_PREFIX}forger", exclusive=True)
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(forged).encode(), reply_to=answers.name, correlation_id="f"),
            routing_key=INGRESS_QUEUE,
        )
        async with answers.iterator() as incoming:
            async for message in incoming:  # the engine's answer: the run is written
                assert IngressReply.model_validate_json(message.body).ok
                await message.ack()
                break
        assert await a.get_workflow_handle("forged").result(timeout=30) == "woke"
        with pytest.raises(WorkflowNotFoundError):
            await b.get_workflow_handle("forged").describe()
        assert (await b.get_workflow_handle("b-only").describe()).status == "completed"
