"""Workflow updates on the real stack (issue 15): through the tenant client, admission, the cell's topic,
the partition's owner and the namespace's platform-hosted worker, and back through the run's outbox."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from perdure.platform.core import history as h
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.tenancy.model import Quota
from perdure.tenants import ApplicationError, WorkflowNotFoundError
from perdure.tenants.client import Client
from perdure.tenants.client_errors import WorkflowUpdateFailedError

from .cell_app import Account
from .cell_harness import count_lines, eventually, run_perdure
from .conftest import TenantCellFactory


def _updates_of(events: list[h.HistoryEvent], update_id: str) -> list[str]:
    return [
        e.type
        for e in events
        if isinstance(e, h.WorkflowExecutionUpdateAccepted | h.WorkflowExecutionUpdateCompleted)
        and e.update_id == update_id
    ]


async def test_an_update_round_trip_through_the_client(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    ledger = tmp_path / "ledger"
    async with await Client.connect(tenants.connection_string("a")) as client:
        account = await client.start_workflow(Account.run, str(ledger), id="account")
        assert await account.execute_update(Account.deposit, 10, "a") == 10

        # Refused by the validator: answered with the reason, nothing recorded.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await account.execute_update(Account.deposit, -5, "neg")
        assert refused.value.rejected
        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.type == "InvalidAmount"
        assert str(refused.value.cause) == "a deposit must be positive, not -5"
        with pytest.raises(WorkflowUpdateFailedError, match="refused") as unknown:
            await account.execute_update("withdraw", 3)
        assert "the workflow handles: close, deposit" in str(unknown.value.cause)

        # The same id again (a retry after a lost answer): one execution, the same answer.
        assert await account.execute_update(Account.deposit, 5, "b", id="dep-b") == 15
        assert await account.execute_update(Account.deposit, 5, "b", id="dep-b") == 15
        started = await account.start_update(Account.deposit, 5, "b", id="dep-b")
        assert started.id == "dep-b" and await started.result() == 15

        # start_update returns once the run took it; the result follows.
        later = await account.start_update(Account.deposit, 1, "c", True, id="dep-c")
        await account.signal(Account.release)
        assert await later.result(timeout=30) == 16

        # The ops path and the CLI reach the same handlers.
        namespace = tenants.namespaces["a"].record.name
        async with await OpsClient.connect(tenants.cell.settings, namespace) as ops:
            assert await ops.update("account", "deposit", 4, "d", id="dep-d") == 20
            with pytest.raises(WorkflowUpdateFailedError):
                await ops.update("account", "deposit", 0, "zero")
        code, out, err = await run_perdure(
            tenants, "workflow", "update", namespace, "account", "deposit", "--input", '[1, "e"]'
        )
        assert code == 0, err
        assert json.loads(out) == 21
        code, _, err = await run_perdure(
            tenants, "workflow", "update", namespace, "account", "deposit", "--input", '[-1, "f"]'
        )
        assert code == 1 and "refused: a deposit must be positive, not -1" in err

        assert await account.execute_update(Account.close) == 21
        assert await account.result(timeout=30) == 21
        with pytest.raises(WorkflowNotFoundError):
            await account.execute_update(Account.deposit, 1, "late")

        async with await OpsClient.connect(tenants.cell.settings, namespace) as ops:
            history = await ops.history("account")
    # One accepted event per update that ran (dep-b once, however often it was sent); refusals left none.
    accepted = [e for e in history if isinstance(e, h.WorkflowExecutionUpdateAccepted)]
    assert [e.update_name for e in accepted] == ["deposit"] * 5 + ["close"]
    assert _updates_of(history, "dep-b") == [
        "workflow_execution_update_accepted",
        "workflow_execution_update_completed",
    ]
    assert count_lines(ledger) == {f"deposit-{tag}": 1 for tag in "abcde"}


async def test_an_update_in_flight_survives_a_killed_cell_and_runs_once(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    ledger = tmp_path / "ledger"
    first = tenants.cell.processes[0]
    async with await Client.connect(tenants.connection_string("a")) as client:
        account = await client.start_workflow(Account.run, str(ledger), id="account")
        # Taken by the run, its handler waits for the release: in flight when the cell dies.
        held = await account.start_update(Account.deposit, 7, "held", True, id="dep-held")
        first.kill()  # SIGKILL: no goodbye, nothing in flight committed
        await first.wait()
        # The caller's answer is lost with the cell; it asks again under the same id meanwhile (its
        # request waits in the namespace's ingress while admission is down).
        again = asyncio.create_task(account.execute_update(Account.deposit, 7, "held", True, id="dep-held"))
        waiting = asyncio.create_task(held.result(timeout=120))
        await asyncio.sleep(1)
        assert not again.done() and not waiting.done()
        await tenants.cell.start_process().start()
        await account.signal(Account.release)
        assert await asyncio.wait_for(again, 120) == 7
        assert await waiting == 7
        assert await account.execute_update(Account.close) == 7
        assert await account.result(timeout=60) == 7

        namespace = tenants.namespaces["a"].record.name

        async def recorded() -> list[h.HistoryEvent]:
            async with await OpsClient.connect(tenants.cell.settings, namespace) as ops:
                events = await ops.history("account")
            assert h.is_close_event(events[-1])
            return events

        history = await eventually(recorded, timeout=30)
    assert _updates_of(history, "dep-held") == [
        "workflow_execution_update_accepted",
        "workflow_execution_update_completed",
    ]
    assert count_lines(ledger) == {"deposit-held": 1}
