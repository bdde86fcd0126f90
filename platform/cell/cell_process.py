"""``perdure cell run CELL``: the engine, the timer service and the activity executors of a cell in one
process. SIGTERM (or SIGINT) finishes the batch in flight, commits, leaves the consumer group and lets
running activities finish."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from aiokafka import AIOKafkaConsumer

from perdure.infra.consumer_backlog import ConsumerBacklog
from perdure.infra.settings import Settings
from perdure.infra.telemetry import Telemetry, configure_telemetry
from perdure.platform.admission.admission_service import Admission
from perdure.platform.cell.activity_executor import ActivityExecutors
from perdure.platform.cell.amqp_channels import AmqpChannels
from perdure.platform.cell.armed_timers import ArmedTimers
from perdure.platform.cell.connections import Databases
from perdure.platform.cell.engine import CellEngine
from perdure.platform.cell.namespace_apps import NamespaceApps
from perdure.platform.cell.outbox_sender import OutboxSender
from perdure.platform.cell.storage_sampler import StorageSampler
from perdure.platform.cell.task_producer import TaskProducer, new_producer
from perdure.platform.cell.usage_producer import UsageProducer, ensure_metering_topic

log = logging.getLogger("perdure.cell")


def engine_group(cell: str) -> str:
    return f"perdure.cell.{cell}.engine"


async def run_cell(
    settings: Settings,
    cell_name: str,
    *,
    executors: bool = True,
    admission: bool = True,
    stop: asyncio.Event | None = None,
    telemetry: Telemetry | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set, for an embedding such as a test)."""
    owns_telemetry = telemetry is None
    telemetry = telemetry or configure_telemetry(settings, f"perdure-cell-{cell_name}")
    endpoints = settings.endpoints(cell_name)
    databases = Databases.connect(settings, cell_name)
    cell = await databases.control.get_cell(cell_name)
    store = databases.runs(settings, cell_name)
    await store.ensure_indexes()
    producer = new_producer(endpoints.kafka_bootstrap_servers)
    await producer.start()
    tasks = TaskProducer(producer, cell_name)
    # Usage goes to the global Kafka, which a cell may not share.
    await ensure_metering_topic(settings)
    metering_producer = producer
    if settings.kafka_bootstrap_servers != endpoints.kafka_bootstrap_servers:
        metering_producer = new_producer(settings.kafka_bootstrap_servers)
        await metering_producer.start()
    usage = UsageProducer(metering_producer, settings.metering_topic)
    channels = AmqpChannels(settings, cell_name)
    apps = NamespaceApps(databases.control, cell_name)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=endpoints.kafka_bootstrap_servers,
        group_id=engine_group(cell_name),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        max_poll_records=500,
        session_timeout_ms=settings.engine_session_timeout_ms,
        heartbeat_interval_ms=min(1_000, settings.engine_session_timeout_ms // 3),
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    engine: CellEngine | None = None
    sender = OutboxSender(
        store, tasks, channels, cell.partitions, apps.vhost_of, ArmedTimers(), lambda: None, usage
    )
    engine = CellEngine(cell, store, apps, tasks, sender, consumer)
    sender.timer_armed = engine.timer_armed
    workers = ActivityExecutors(apps, tasks, channels, slots=settings.executor_slots)
    backlog = ConsumerBacklog(
        endpoints.kafka_bootstrap_servers, cell.topic, cell.partitions, engine_group(cell_name)
    )
    admitter = Admission(apps, store, tasks, channels, backlog=backlog, fair=settings.admission_fair)

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    engine.subscribe()
    await consumer.start()
    log.info("cell running", extra={"cell": cell_name, "partitions": cell.partitions})
    sampler = StorageSampler(
        cell_name,
        store,
        apps,
        usage,
        lambda: list(engine.epochs),
        timedelta(seconds=settings.storage_sample_seconds),
    )
    running = [
        asyncio.create_task(engine.run(), name="engine"),
        asyncio.create_task(sampler.run(engine.stopping), name="storage"),
    ]
    if executors:
        running.append(asyncio.create_task(workers.run(), name="executors"))
    if admission:
        await backlog.start()
        running.append(asyncio.create_task(admitter.run(), name="admission"))
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("stopping: finishing work in flight")
    finally:
        await admitter.stop()
        if admission:
            await backlog.stop()
        await workers.stop()
        engine.stopping.set()
        await asyncio.gather(*running, return_exceptions=True)
        stopper.cancel()
        await consumer.stop()  # commits were made per batch; this leaves the group
        await producer.stop()
        if metering_producer is not producer:
            await metering_producer.stop()
        await channels.close()
        await databases.close()
        if owns_telemetry:
            telemetry.shutdown()
        log.info("cell stopped", extra={"cell": cell_name})
