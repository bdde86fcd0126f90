"""Throttled requests are sent to metering in batches, kept through a failed send, bounded, and sent once
more at a graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from perdure.platform.admission.throttle_meter import ThrottleMeter
from perdure.platform.core.usage import UsageRecord

AT = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)


class Metering:
    """What a send reached (or, while ``refusing``, a send that fails as Kafka away would)."""

    def __init__(self) -> None:
        self.batches: list[list[UsageRecord]] = []
        self.refusing = False
        self.sent = asyncio.Event()

    async def send(self, records: Sequence[UsageRecord]) -> None:
        if self.refusing:
            raise ConnectionError("metering topic unreachable")
        self.batches.append(list(records))
        self.sent.set()


async def test_noted_requests_go_out_in_one_batch_with_their_request_ids() -> None:
    metering = Metering()
    meter = ThrottleMeter(metering.send, every=0.01)
    meter.note("acme", "req-1", AT)
    meter.note("acme", "req-2", AT)
    await meter.flush()
    [batch] = metering.batches
    assert [(r.id, r.namespace, r.metric, r.quantity, r.at) for r in batch] == [
        ("throttled/acme/req-1", "acme", "throttled_request", 1, AT),
        ("throttled/acme/req-2", "acme", "throttled_request", 1, AT),
    ]
    assert meter.waiting == 0
    # The same request noted again (a redelivery) is the same record: metering counts it once.
    meter.note("acme", "req-1", AT)
    await meter.flush()
    assert metering.batches[1][0].id == batch[0].id


async def test_a_failed_send_keeps_the_records_and_the_loop_sends_them_later() -> None:
    metering = Metering()
    metering.refusing = True
    meter = ThrottleMeter(metering.send, every=0.01)
    meter.note("acme", "req-1", AT)
    try:
        await meter.flush()
    except ConnectionError:
        pass
    assert meter.waiting == 1 and metering.batches == []
    stopping = asyncio.Event()
    running = asyncio.create_task(meter.run(stopping))
    metering.refusing = False
    await asyncio.wait_for(metering.sent.wait(), 30)
    assert [r.id for r in metering.batches[0]] == ["throttled/acme/req-1"]
    stopping.set()
    await asyncio.wait_for(running, 30)


async def test_the_kept_records_are_bounded_and_the_oldest_dropped() -> None:
    metering = Metering()
    meter = ThrottleMeter(metering.send, max_kept=3)
    for i in range(5):
        meter.note("acme", f"req-{i}", AT)
    assert meter.waiting == 3 and meter.dropped == 2
    await meter.flush()
    assert [r.id for r in metering.batches[0]] == [f"throttled/acme/req-{i}" for i in (2, 3, 4)]


async def test_a_graceful_stop_sends_what_was_noted_last() -> None:
    metering = Metering()
    meter = ThrottleMeter(metering.send, every=3600)  # the loop would not send again before the stop
    stopping = asyncio.Event()
    running = asyncio.create_task(meter.run(stopping))
    meter.note("acme", "req-1", AT)
    await asyncio.wait_for(metering.sent.wait(), 30)
    meter.note("acme", "req-2", AT)
    stopping.set()
    await asyncio.wait_for(running, 30)
    assert [r.id for batch in metering.batches for r in batch] == [
        "throttled/acme/req-1",
        "throttled/acme/req-2",
    ]
