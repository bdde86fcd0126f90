"""Fairness at admission: tenant A floods a cell with workflows, then tenant B sends a few; B's
start-to-result latency and A's throughput, with fair admission and with a plain FIFO, side by side.

Needs the stack up (`perdure stack up`). Run: .venv/bin/python -m bench.fairness [--flood 5000] [--small 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika

from bench.machine import describe_machine
from bench.throughput import cleanup, start_cell_process
from perdure.infra.settings import load_settings
from perdure.platform.control.namespace_requests import provision_namespace
from perdure.platform.control.provisioning import create_cell
from perdure.platform.core.outbox import RunClosed
from perdure.platform.core.payloads import default_converter
from perdure.platform.protocol.ingress_wire import StartRequest
from perdure.platform.protocol.vhost_layout import INGRESS_QUEUE, RESULTS_EXCHANGE
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.model import Quota

REPO = Path(__file__).resolve().parents[1]
APP = "bench.throughput_app:app"


class Tenant:
    """Publishes starts to its namespace's ingress and notes when each workflow closed."""

    def __init__(self, connection_string: str) -> None:
        self.connection_string = connection_string
        self.published: dict[str, float] = {}
        self.closed: dict[str, float] = {}
        self._arrived = asyncio.Event()

    async def open(self) -> None:
        self._connection = await aio_pika.connect(self.connection_string)
        self._channel = await self._connection.channel()
        closes = await self._channel.declare_queue(exclusive=True)
        await closes.bind(await self._channel.get_exchange(RESULTS_EXCHANGE, ensure=False), "closed.#")
        await closes.consume(self._on_closed, no_ack=True)

    async def _on_closed(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.closed[RunClosed.model_validate_json(message.body).workflow_id] = time.monotonic()
        self._arrived.set()

    async def send(self, prefix: str, count: int) -> list[str]:
        ids = [f"{prefix}-{i}" for i in range(count)]
        for chunk in range(0, count, 500):
            batch = ids[chunk : chunk + 500]
            now = time.monotonic()
            await asyncio.gather(
                *(
                    self._channel.default_exchange.publish(
                        aio_pika.Message(
                            StartRequest(
                                request_id=str(uuid.uuid4()),
                                workflow_type="Instant",
                                workflow_id=workflow_id,
                                input=default_converter.to_payloads([workflow_id]),
                            )
                            .model_dump_json()
                            .encode()
                        ),
                        routing_key=INGRESS_QUEUE,
                    )
                    for workflow_id in batch
                )
            )
            self.published.update(dict.fromkeys(batch, now))
        return ids

    async def wait(self, ids: list[str]) -> None:
        async with asyncio.timeout(1800):
            while not set(ids) <= self.closed.keys():
                self._arrived.clear()
                await self._arrived.wait()

    def latency(self, ids: list[str], fraction: float) -> float:
        values = sorted(self.closed[i] - self.published[i] for i in ids)
        return values[min(len(values) - 1, int(len(values) * fraction))] * 1000

    async def close(self) -> None:
        await self._connection.close()


@dataclass
class Outcome:
    b_alone: tuple[float, float]
    b_behind: tuple[float, float]
    a_per_second: float


async def scenario(fair: bool, flood: int, small: int) -> Outcome:
    suffix = uuid.uuid4().hex[:8]
    prefix = f"fair{suffix}"
    settings = load_settings(database_prefix=prefix)
    cell = f"fair-{suffix}"
    await create_cell(settings, cell, 8)
    databases = Databases.connect(settings)
    await TenancyStore(databases.control_db).create_account("bench")
    await databases.close()
    a, b = [
        await provision_namespace(
            settings, f"{label}-{suffix}", APP, cell=cell, account="bench", quota=Quota.unthrottled()
        )
        for label in ("a", "b")
    ]
    assert a.connection_string and b.connection_string
    process = await start_cell_process(cell, prefix, PERDURE_ADMISSION_FAIR=str(fair).lower())
    tenant_a, tenant_b = Tenant(a.connection_string), Tenant(b.connection_string)
    try:
        await tenant_a.open()
        await tenant_b.open()
        warm = await tenant_b.send("warm", 10)  # the cell is up and serving
        await tenant_b.wait(warm)
        alone = await tenant_b.send("alone", small)
        await tenant_b.wait(alone)
        began = time.monotonic()
        flood_ids = await tenant_a.send("flood", flood)
        behind = await tenant_b.send("behind", small)
        await tenant_b.wait(behind)
        await tenant_a.wait(flood_ids)
        a_rate = flood / (max(tenant_a.closed[i] for i in flood_ids) - began)
        return Outcome(
            (tenant_b.latency(alone, 0.5), tenant_b.latency(alone, 0.99)),
            (tenant_b.latency(behind, 0.5), tenant_b.latency(behind, 0.99)),
            a_rate,
        )
    finally:
        await tenant_a.close()
        await tenant_b.close()
        process.terminate()
        await process.wait()
        await cleanup(settings, cell, [a.record.name, b.record.name])


async def main(flood: int, small: int) -> None:
    fair = await scenario(True, flood, small)
    fifo = await scenario(False, flood, small)
    print(f"machine: {describe_machine()}")
    print(
        f"cell: 8 partitions, one `perdure cell run` process; "
        f"A floods {flood} workflows, then B sends {small}"
    )
    print(f"{'':34} {'fair':>14} {'FIFO':>14}")
    for label, pick in (
        ("B alone, p50 / p99 (ms)", lambda o: o.b_alone),
        ("B behind A's flood, p50 / p99 (ms)", lambda o: o.b_behind),
    ):
        cells = [f"{pick(o)[0]:.0f} / {pick(o)[1]:.0f}" for o in (fair, fifo)]
        print(f"{label:34} {cells[0]:>14} {cells[1]:>14}")
    print(f"{'A throughput (workflows/s)':34} {fair.a_per_second:>14.1f} {fifo.a_per_second:>14.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flood", type=int, default=5000)
    parser.add_argument("--small", type=int, default=50)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.flood, arguments.small))
