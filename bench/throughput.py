"""Cell throughput: one cell of 8 partitions, workflows of three trivial activities, on the local stack.

Prints completed workflows/s and events/s at saturation, and p50/p99 start-to-result latency at
saturation and at light load (one workflow at a time). Needs the stack up (`perdure stack up`).

``--processes N`` runs the cell on N ``perdure cell run`` processes (they share its partitions);
``--cpus LIST`` pins them to those CPUs with ``taskset`` (``--cpus 0`` against ``--cpus 0,1`` shows
what a second core gives the cell's processes; the services keep every core).

Run: .venv/bin/python -m bench.throughput [--workflows 1000] [--light 50] [--processes 1] [--cpus 0,1]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from bench.machine import describe_machine
from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.infra.settings import Settings, load_settings
from perdure.platform.control.namespace_requests import create_namespace
from perdure.platform.control.provisioning import create_cell
from perdure.platform.core.outbox import RunClosed
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.protocol.vhost_layout import RESULTS_EXCHANGE
from perdure.platform.stores.run_store import RunStore
from perdure.platform.tenancy.model import Quota
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url, tenant_user

REPO = Path(__file__).resolve().parents[1]
EVENTS_PER_WORKFLOW = 11  # started, 3 x (scheduled, started, completed), completed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def main(workflows: int, light: int, processes: int = 1, cpus: str | None = None) -> None:
    figures = await measure(workflows, light, processes, cpus)
    gaps = figures.pop("gaps")
    print(f"machine: {describe_machine()}")
    pinned = f", pinned to CPUs {cpus}" if cpus else ""
    print(
        f"cell: 8 partitions, {processes} `perdure cell run` process(es){pinned}, "
        f"FerretDB backend: {figures['backend']}"
    )
    print(
        f"saturation: {workflows} workflows enqueued in {figures['enqueue_seconds']:.2f} s, "
        f"all done in {figures['saturation_seconds']:.2f} s -> "
        f"{figures['workflows_per_second']:.1f} workflows/s, "
        f"{figures['workflows_per_second'] * EVENTS_PER_WORKFLOW:.0f} events/s"
    )
    print(
        f"saturation start-to-result latency: p50 {figures['saturation_p50_ms']:.0f} ms, "
        f"p99 {figures['saturation_p99_ms']:.0f} ms (all enqueued at once)"
    )
    print(
        f"light load ({light} workflows one at a time): p50 {figures['light_p50_ms']:.1f} ms, "
        f"p99 {figures['light_p99_ms']:.1f} ms"
    )
    print("where a light-load workflow's time goes (median ms per step, summed over its occurrences):")
    runs = max(1, light)
    for step, values in gaps.items():
        print(f"  {step:<60} {statistics.median(values):6.1f} x{len(values) / runs:.0f}")


async def measure(workflows: int, light: int, processes: int = 1, cpus: str | None = None) -> dict[str, Any]:
    """The ops path's figures: light-load and saturation latencies, workflows/s, and the light-load
    timeline (``gaps``)."""
    suffix = uuid.uuid4().hex[:8]
    prefix = f"bench{suffix}"
    settings = load_settings(database_prefix=prefix)
    cell, namespace = f"bench-{suffix}", f"bench-{suffix}"
    await create_cell(settings, cell, 8)
    await create_namespace(settings, namespace, "bench.throughput_app:app", cell, quota=Quota.unthrottled())
    cell_processes = [await start_cell_process(cell, prefix, cpus=cpus) for _ in range(processes)]
    closed: dict[str, float] = {}
    arrived = asyncio.Event()
    connection = await aio_pika.connect(namespace_amqp_url(settings, cell, namespace))
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(await channel.get_exchange(RESULTS_EXCHANGE), "closed.#")

    async def on_closed(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            closed[RunClosed.model_validate_json(message.body).workflow_id] = time.perf_counter()
            arrived.set()

    await queue.consume(on_closed)

    async def wait_for(ids: set[str]) -> None:
        while not ids <= closed.keys():
            arrived.clear()
            await arrived.wait()

    try:
        async with await OpsClient.connect(settings, namespace) as client:
            # Warm up: the process is up, partitions assigned, caches and connections made.
            await client.start_workflow("ThreeNoops", id="warm-up")
            await asyncio.wait_for(wait_for({"warm-up"}), 120)

            started: dict[str, float] = {}
            started_at: dict[str, datetime] = {}
            for i in range(light):
                workflow_id = f"light-{i}"
                started[workflow_id] = time.perf_counter()
                started_at[workflow_id] = datetime.now(UTC)
                await client.start_workflow("ThreeNoops", id=workflow_id)
                await asyncio.wait_for(wait_for({workflow_id}), 60)
            light_latency = [(closed[w] - started[w]) * 1000 for w in started]
            closed_at = {w: started_at[w] + timedelta(seconds=closed[w] - started[w]) for w in started}
            gaps = await light_timeline(settings, cell, namespace, started_at, closed_at)

            ids = [f"load-{i}" for i in range(workflows)]
            begin = time.perf_counter()
            for chunk in range(0, workflows, 200):
                await client.start_workflows("ThreeNoops", [(w, []) for w in ids[chunk : chunk + 200]])
            enqueued = time.perf_counter()
            await asyncio.wait_for(wait_for(set(ids)), 1800)
            duration = max(closed[w] for w in ids) - begin
            load_latency = [(closed[w] - begin) * 1000 for w in ids]
    finally:
        for process in cell_processes:
            process.terminate()
            await process.wait()
        await connection.close()
        await cleanup(settings, cell, [namespace])
    return {
        "backend": settings.stack_mongodb_backend,
        "enqueue_seconds": enqueued - begin,
        "saturation_seconds": duration,
        "workflows_per_second": workflows / duration,
        "saturation_p50_ms": percentile(load_latency, 0.5),
        "saturation_p99_ms": percentile(load_latency, 0.99),
        "light_p50_ms": statistics.median(light_latency),
        "light_p99_ms": percentile(light_latency, 0.99),
        "gaps": gaps,
    }


async def light_timeline(
    settings: Settings,
    cell: str,
    namespace: str,
    started_at: dict[str, datetime],
    closed_at: dict[str, datetime],
) -> dict[str, list[float]]:
    """Where a light-load workflow's time goes: the gaps between its history's events (stamped by the
    engine when it recorded them), and from the client's start and to the client's close notice."""
    store = RunStore(AsyncMongoClient(settings.endpoints(cell).mongodb_uri)[settings.cell_database(cell)])
    gaps: dict[str, list[float]] = collections.defaultdict(list)
    for workflow_id, begun in started_at.items():
        document = await store.latest_run(namespace, workflow_id)
        if document is None:
            continue
        events = await store.read_history(document["_id"], document)
        marks = [("client start", begun)] + [(e.type, e.timestamp) for e in events]
        marks.append(("client notified", closed_at[workflow_id]))
        for (before, at), (after, then) in itertools.pairwise(marks):
            gaps[f"{before} -> {after}"].append((then - at).total_seconds() * 1000)
    await store.db.client.close()
    return gaps


async def start_cell_process(
    cell: str, prefix: str, cpus: str | None = None, **env: str
) -> asyncio.subprocess.Process:
    """``perdure cell run CELL`` under the database prefix of a benchmark, quiet, with ``env`` added;
    on the CPUs ``cpus`` only (``taskset``'s list), if given."""
    pinning = ["taskset", "-c", cpus] if cpus else []
    return await asyncio.create_subprocess_exec(
        *pinning,
        str(Path(sys.executable).parent / "perdure"),
        "cell",
        "run",
        cell,
        env={
            **os.environ,
            "PERDURE_DATABASE_PREFIX": prefix,
            "PYTHONPATH": str(REPO),
            "PERDURE_LOG_LEVEL": "WARNING",
            **env,
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def cleanup(settings: Settings, cell: str, namespaces: list[str]) -> None:
    """Remove what a benchmark made: the cell's topics and databases, the namespaces' vhosts and users."""
    endpoints = settings.endpoints(cell)
    admin = AIOKafkaAdminClient(**endpoints.kafka())
    await admin.start()
    await admin.delete_topics([f"perdure.cell.{cell}.tasks", f"perdure.cell.{cell}.dlq"])
    await admin.close()
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(endpoints.mongodb_uri)
    await mongo.drop_database(settings.control_database)
    await mongo.drop_database(settings.cell_database(cell))
    await mongo.close()
    async with RabbitMQAdmin(endpoints.rabbitmq_management_url) as rabbit:
        for namespace in namespaces:
            await rabbit.delete_vhost(namespace)
            await rabbit.delete_user(tenant_user(namespace))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--light", type=int, default=50)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--cpus", help="taskset's CPU list for the cell processes, e.g. 0 or 0,1")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.workflows, arguments.light, arguments.processes, arguments.cpus))
