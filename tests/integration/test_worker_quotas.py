"""A namespace's platform-hosted worker holds it to its quota, on the real services: its rate and its
concurrency of activities; another namespace's worker is not held back with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from perdure.platform.tenancy.model import Quota
from perdure.tenants.client import Client

from .cell_app import FanOut
from .conftest import TenantCellFactory

pytestmark = pytest.mark.exclusive  # it bounds times

BURST = 5


def intervals(ledger: Path, tag: str) -> list[tuple[float, float]]:
    spans = []
    for line in ledger.read_text().splitlines():
        name, began, ended = line.split()
        if name == tag:
            spans.append((float(began), float(ended)))
    return sorted(spans)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])  # an end sorts first
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


async def test_a_namespaces_worker_holds_it_to_its_concurrency(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    open_quota = Quota.unthrottled()
    tenants = await make_tenant_cell(
        {"capped": open_quota.model_copy(update={"max_concurrent_activities": 2}), "open": open_quota}
    )
    ledger = tmp_path / "ledger"
    async with (
        await Client.connect(tenants.connection_string("capped")) as capped,
        await Client.connect(tenants.connection_string("open")) as other,
    ):
        capped_run = await capped.start_workflow(FanOut.run, str(ledger), "capped", 12, 0.2, id="capped")
        open_run = await other.start_workflow(FanOut.run, str(ledger), "open", 12, 0.2, id="open")
        assert [await capped_run.result(timeout=60), await open_run.result(timeout=60)] == [12, 12]
    assert most_at_once(intervals(ledger, "capped")) == 2
    assert most_at_once(intervals(ledger, "open")) > 2  # the other namespace's worker is not capped


async def test_a_namespaces_worker_holds_it_to_its_rate(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell(
        {
            "slow": Quota(actions_per_second=20, burst=BURST, max_concurrent_activities=1000),
            "other": Quota.unthrottled(),
        }
    )
    ledger = tmp_path / "ledger"
    async with (
        await Client.connect(tenants.connection_string("slow")) as slow,
        await Client.connect(tenants.connection_string("other")) as other,
    ):
        slow_run = await slow.start_workflow(FanOut.run, str(ledger), "slow", 81, 0.0, id="slow")
        other_run = await other.start_workflow(FanOut.run, str(ledger), "other", 81, 0.0, id="other")
        assert await other_run.result(timeout=60) == 81
        assert await slow_run.result(timeout=60) == 81
    slow_starts = [b for b, _ in intervals(ledger, "slow")]
    # The burst goes at once, then 20 activities a second (within 10%).
    rate = (len(slow_starts) - BURST) / (slow_starts[-1] - slow_starts[0])
    assert 18 <= rate <= 22, rate
    other_starts = [b for b, _ in intervals(ledger, "other")]
    assert other_starts[-1] - other_starts[0] < 1.5  # the other namespace was not held back with it
