"""A namespace's concurrency quota, as admission enforces it: a start past ``max_concurrent_workflows``
is refused with ``QuotaExceededError`` (nothing is started, and the tenant is told why), and room made by
a run that closes is given again once admission counts the namespace's runs anew."""

from __future__ import annotations

from pathlib import Path

import pytest

from perdure.platform.tenancy.model import Quota
from perdure.tenants import QuotaExceededError
from perdure.tenants.client import Client

from .cell_app import Gated
from .cell_harness import eventually
from .conftest import TenantCellFactory


async def test_starts_past_the_concurrency_quota_are_refused_until_a_run_closes(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell(
        {"a": Quota.unthrottled().model_copy(update={"max_concurrent_workflows": 2})}
    )
    ledger = str(tmp_path / "ledger")
    async with await Client.connect(tenants.connection_string("a")) as client:
        first = await client.start_workflow(Gated.run, ledger, "one", id="one")
        await client.start_workflow(Gated.run, ledger, "two", id="two")
        with pytest.raises(QuotaExceededError, match="2 workflows are running; the namespace allows 2"):
            await client.start_workflow(Gated.run, ledger, "three", id="three")
        assert sorted(r["workflow_id"] for r in await client.list_workflows()) == ["one", "two"]

        await first.signal(Gated.proceed)
        assert len(await first.result(timeout=60)) == 3

        async def third_starts() -> None:
            try:
                await client.start_workflow(Gated.run, ledger, "three", id="three")
            except QuotaExceededError as exc:  # until admission counts the runs again
                raise AssertionError(str(exc)) from exc

        await eventually(third_starts, timeout=30)
        running = sorted(r["workflow_id"] for r in await client.list_workflows(status="running"))
        assert running == ["three", "two"]
