"""The activity executors hold each namespace to its quota, on the real services: its rate, its
concurrency, and its weighted share of the executor's slots when namespaces compete for them."""

from __future__ import annotations

from pathlib import Path

from perdure.platform.tenancy.model import Quota
from perdure.tenants.client import Client

from .cell_app import FanOut
from .conftest import TenantCellFactory

SLOTS = 4
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


async def test_executors_share_slots_by_weight_and_hold_concurrency(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    open_quota = Quota.unthrottled()
    tenants = await make_tenant_cell(
        {
            "gold": open_quota.model_copy(update={"weight": 3}),
            "basic": open_quota,
            "capped": open_quota.model_copy(update={"max_concurrent_activities": 2}),
        },
        PERDURE_EXECUTOR_SLOTS=str(SLOTS),
    )
    ledger = tmp_path / "ledger"
    async with (
        await Client.connect(tenants.connection_string("gold")) as gold,
        await Client.connect(tenants.connection_string("basic")) as basic,
    ):
        # Both namespaces keep the executor's 4 slots busy; gold should get 3 of every 4.
        handles = [
            await gold.start_workflow(FanOut.run, str(ledger), "gold", 60, 0.1, id="gold"),
            await basic.start_workflow(FanOut.run, str(ledger), "basic", 60, 0.1, id="basic"),
        ]
        assert [await h.result(timeout=120) for h in handles] == [60, 60]
    gold_spans, basic_spans = intervals(ledger, "gold"), intervals(ledger, "basic")
    assert most_at_once(gold_spans + basic_spans) <= SLOTS
    # While both had work waiting (until the first of them ran its last activity), starts went 3:1.
    contended_from = max(gold_spans[0][0], basic_spans[0][0])
    contended_until = min(gold_spans[-1][0], basic_spans[-1][0])
    gold_starts = sum(contended_from <= b <= contended_until for b, _ in gold_spans)
    basic_starts = sum(contended_from <= b <= contended_until for b, _ in basic_spans)
    assert basic_starts >= 10, (gold_starts, basic_starts)
    assert 2.4 <= gold_starts / basic_starts <= 3.6, (gold_starts, basic_starts)

    async with await Client.connect(tenants.connection_string("capped")) as capped:
        assert await capped.execute_workflow(FanOut.run, str(ledger), "capped", 12, 0.2, id="capped") == 12
    assert most_at_once(intervals(ledger, "capped")) == 2


async def test_executors_hold_a_namespace_to_its_rate(
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
