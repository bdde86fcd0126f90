"""Metering on the real services: the actions billed equal the actions counted from the histories, and
the metering service counts every record once through SIGKILLs, redeliveries and copies."""

from __future__ import annotations

import asyncio
import collections
import random
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.reconcile import counted_from_histories, metered, mongo_client
from perdure.billing.metering_service import metering_group, usage_store
from perdure.platform.core.usage import ACTION_METRICS, UsageRecord, hour_of
from perdure.platform.messaging.usage_producer import ensure_metering_topic
from perdure.platform.tenancy.model import Quota
from perdure.tenants.client import Client

from .cell_app import Gated, MixedWork
from .cell_harness import eventually
from .conftest import TenantCellFactory


async def test_billed_actions_reconcile_with_the_histories(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    workload = {"a": 1, "b": 2, "c": 3}  # workflows per namespace (each with a child)
    tenants = await make_tenant_cell(
        {label: Quota.unthrottled() for label in workload}, PERDURE_STORAGE_SAMPLE_SECONDS="2"
    )
    await tenants.cell.metering_process().start()
    ledger = str(tmp_path / "ledger")
    for label, count in workload.items():
        async with await Client.connect(tenants.connection_string(label)) as client:
            handles = [
                await client.start_workflow(MixedWork.run, ledger, f"{label}{i}", id=f"mixed-{i}")
                for i in range(count)
            ]
            for handle in handles:
                assert await handle.query(MixedWork.waiting) is True
                await handle.signal(MixedWork.proceed)
            for i, handle in enumerate(handles):
                assert await handle.result(timeout=60) == f"{label}{i}:7:woke"

    settings = tenants.cell.settings
    for label, count in workload.items():
        namespace = tenants.namespaces[label].record.name
        expected = await counted_from_histories(settings, tenants.cell.cell, namespace)
        expected["query"] = count
        # Two runs per workflow, three attempts of its activity, two timers (its own, the child's).
        assert expected["workflow_started"] == 2 * count and expected["activity_started"] == 3 * count

        async def billed_equals_counted(
            namespace: str = namespace, expected: collections.Counter[str] = expected
        ) -> None:
            billed = await metered(settings, namespace)
            actions = collections.Counter({m: billed[m] for m in ACTION_METRICS if billed[m]})
            assert actions == expected
            assert billed["retained_storage"] > 0  # the closed runs' histories, sampled every 2 s

        await eventually(billed_equals_counted, timeout=60)


async def test_metering_counts_once_through_kills_redeliveries_and_copies(
    make_tenant_cell: TenantCellFactory,
) -> None:
    # Small batches: metering's progress moves in small steps, so the kills land mid-stream.
    tenants = await make_tenant_cell(
        {"a": Quota(), "b": Quota(), "c": Quota()}, start=False, PERDURE_METERING_BATCH_RECORDS="100"
    )
    cell, settings = tenants.cell, tenants.cell.settings
    await ensure_metering_topic(settings)
    namespaces = [p.record.name for p in tenants.namespaces.values()]
    base = hour_of(datetime.now(UTC)) - timedelta(hours=3)
    rng = random.Random(7)
    records = [
        UsageRecord(
            id=f"synthetic/{i}",
            namespace=rng.choice(namespaces),
            metric=rng.choice(ACTION_METRICS),
            quantity=rng.randint(1, 5),
            at=base + timedelta(seconds=rng.randint(0, 3 * 3600 - 1)),
        )
        for i in range(12_000)
    ]
    expected: collections.Counter[tuple[str, datetime, str]] = collections.Counter()
    for record in records:
        expected[record.namespace, record.hour, record.metric] += record.quantity

    async def publish(batch: list[UsageRecord]) -> None:
        producer = AIOKafkaProducer(**settings.endpoints().kafka(), acks="all")
        await producer.start()
        try:
            for record in batch:
                await producer.send(
                    settings.metering_topic, record.model_dump_json().encode(), key=record.namespace.encode()
                )
            await producer.flush()
        finally:
            await producer.stop()

    async def counted() -> int:
        client = mongo_client(settings)
        try:
            return await client[settings.metering_database]["usage_ids"].count_documents({})
        finally:
            await client.close()

    async def at_least(share: float) -> None:
        assert await counted() >= share * len(records)

    await publish(records)
    # Killed twice mid-stream (each time a batch may be half applied), restarted each time.
    killed_at = []
    for share in (0.25, 0.6):
        process = await cell.metering_process().start()
        await eventually(lambda share=share: at_least(share), timeout=120, every=0.02)
        process.kill(signal.SIGKILL)
        await process.wait()
        killed_at.append(await counted())
    assert killed_at[0] < killed_at[1] < len(records), killed_at  # both mid-stream
    # Part of the topic read again: the group's committed offsets moved back by 1,000 per partition ...
    rewind = AIOKafkaConsumer(
        settings.metering_topic,
        **settings.endpoints().kafka(),
        group_id=metering_group(settings),
        enable_auto_commit=False,
        session_timeout_ms=6_000,
    )
    await rewind.start()
    try:

        async def assigned() -> set[TopicPartition]:
            await rewind.getmany(
                timeout_ms=200, max_records=1
            )  # joins the group once the dead member is gone
            assert rewind.assignment()
            return rewind.assignment()

        partitions = await eventually(assigned, timeout=60)
        committed = {tp: await rewind.committed(tp) or 0 for tp in partitions}
        await rewind.commit({tp: max(0, offset - 1_000) for tp, offset in committed.items()})
    finally:
        await rewind.stop()
    # ... and 2,000 records published again as copies (as a re-sent outbox would).
    await publish(rng.sample(records, 2_000))
    await cell.metering_process().start()

    async def totals_match() -> None:
        client = mongo_client(settings)
        try:
            rows = await usage_store(client, settings).hourly(namespaces, base, base + timedelta(hours=4))
        finally:
            await client.close()
        got = collections.Counter({(r.namespace, r.hour, r.metric): r.quantity for r in rows})
        assert got == expected

    await eventually(totals_match, timeout=120)
    assert await counted() == len(records)


async def test_throttled_requests_are_metered_per_namespace_and_not_billed(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell(
        {"slow": Quota(actions_per_second=2, burst=2), "fast": Quota.unthrottled()}
    )
    await tenants.cell.metering_process().start()
    ledger = str(tmp_path / "ledger")
    for label in ("slow", "fast"):
        async with await Client.connect(tenants.connection_string(label)) as client:
            handle = await client.start_workflow(Gated.run, ledger, label, id=f"gated-{label}")
            # Eight signals at once: the slow namespace has one token of its burst left, then two a second.
            await asyncio.gather(*(handle.signal(Gated.proceed) for _ in range(8)))
            assert await handle.result(timeout=60)
    settings = tenants.cell.settings

    async def counted() -> None:
        # (The run closes after the first signal; the later ones reach a closed run and are not billed,
        # but they were admitted, and the slow namespace's were held for its rate.)
        slow = await metered(settings, tenants.slow.record.name)
        assert 5 <= slow["throttled_request"] <= 9  # the signals past its tokens (the start's too, maybe)
        fast = await metered(settings, tenants.fast.record.name)
        assert fast["workflow_started"] == 1 and fast["throttled_request"] == 0

    await eventually(counted, timeout=60)
