"""``perdure cell run CELL``: the engine, the timer service, admission, the report relay and the worker
supervisor of a cell in one process. SIGTERM (or SIGINT) stops admission, stops the namespaces' workers
(which let running activities finish), finishes the batch in flight, commits and leaves the consumer
group, all within ``shutdown_seconds`` (infra/bounded_stop.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from datetime import timedelta

from perdure.infra.bounded_stop import BoundedStop, stop_on_signals
from perdure.infra.consumer_backlog import ConsumerBacklog
from perdure.infra.outages import OUTAGES, StoppedWhileWaiting, until_reachable
from perdure.infra.periodic import every
from perdure.infra.settings import Settings
from perdure.infra.task_dump import dump_tasks_on_sigusr1
from perdure.infra.telemetry import Telemetry, configure_telemetry
from perdure.platform.admission.admission_service import Admission
from perdure.platform.admission.throttle_meter import ThrottleMeter
from perdure.platform.admission.worker_reports import WorkerReportRelay
from perdure.platform.cell.armed_timers import ArmedTimers
from perdure.platform.cell.engine_runner import EngineRunner
from perdure.platform.cell.outbox_sender import OutboxSender
from perdure.platform.cell.process_reporter import ProcessReporter
from perdure.platform.cell.storage_sampler import StorageSampler
from perdure.platform.control import tenant_commands
from perdure.platform.control.canary import UNBILLED_WORKFLOW_TYPES
from perdure.platform.messaging.amqp_channels import AmqpChannels
from perdure.platform.messaging.task_producer import TaskProducer, started_producer
from perdure.platform.messaging.usage_producer import UsageProducer, ensure_metering_topic
from perdure.platform.protocol.cell_wire import engine_group
from perdure.platform.stores.artifacts import ArtifactStore
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.namespace_apps import NamespaceApps
from perdure.platform.workers.supervisor import WorkerSupervisor

log = logging.getLogger("perdure.cell")
# How soon a change of a namespace (a move, a status) reaches the engine and the reports.
NAMESPACES_REFRESH_SECONDS = 1.0


async def run_cell(
    settings: Settings,
    cell_name: str,
    *,
    workers: bool = True,
    admission: bool = True,
    stop: asyncio.Event | None = None,
    telemetry: Telemetry | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set, for an embedding such as a test)."""
    owns_telemetry = telemetry is None
    telemetry = telemetry or configure_telemetry(settings, f"perdure-cell-{cell_name}")
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop, settings.shutdown_seconds, f"cell {cell_name}")
        dump_tasks_on_sigusr1()
    endpoints = settings.endpoints(cell_name)
    databases = Databases.connect(settings, cell_name)
    # A process started while a dependency is down (an orchestrator replacing one in an outage) waits
    # for it, as a running one does; what it opened meanwhile is closed if it is stopped first.
    try:
        async with contextlib.AsyncExitStack() as opened:
            opened.push_async_callback(databases.close)
            cell = await until_reachable(
                "reading the cell", lambda: databases.control.get_cell(cell_name), stop, ("mongodb",)
            )
            store = databases.runs(settings, cell_name)
            await until_reachable("creating the runs' indexes", store.ensure_indexes, stop, ("mongodb",))
            producer = await until_reachable(
                "connecting to Kafka", functools.partial(started_producer, endpoints), stop, ("kafka",)
            )
            opened.push_async_callback(producer.stop)
            # Usage goes to the global Kafka, which a cell may not share.
            await until_reachable(
                "creating the metering topic",
                functools.partial(ensure_metering_topic, settings),
                stop,
                ("kafka",),
            )
            metering_producer = producer
            if settings.kafka_bootstrap_servers != endpoints.kafka_bootstrap_servers:
                metering_producer = await until_reachable(
                    "connecting to the metering Kafka",
                    functools.partial(started_producer, settings.endpoints()),
                    stop,
                    ("kafka",),
                )
                opened.push_async_callback(metering_producer.stop)
            tasks = TaskProducer(producer, cell_name)
            usage = UsageProducer(metering_producer, settings.metering_topic)
            channels = AmqpChannels(settings, cell_name)
            opened.push_async_callback(channels.close)
            apps = NamespaceApps(databases.control, cell_name)
            sender = OutboxSender(
                store, tasks, channels, cell.partitions, apps.vhost_of, ArmedTimers(), lambda: None, usage
            )
            runner = EngineRunner(
                settings, cell, store, apps, tasks, sender, unbilled_workflow_types=UNBILLED_WORKFLOW_TYPES
            )
            reporter = ProcessReporter(databases.control, cell_name, runner, settings.platform_version, apps)
            relay = WorkerReportRelay(
                apps, tasks, channels, local=runner.take_reports if settings.report_handoff else None
            )
            supervisor_of_workers = WorkerSupervisor(
                settings, cell_name, apps, ArtifactStore(databases.control_db), channels
            )
            backlog = ConsumerBacklog(endpoints.kafka(), cell.topic, cell.partitions, engine_group(cell_name))
            admitter = Admission(
                apps,
                store,
                tasks,
                channels,
                backlog=backlog,
                fair=settings.admission_fair,
                throttle_meter=ThrottleMeter(usage.send_all),
                control_commands=functools.partial(tenant_commands.carry_out, settings),
                max_unserved_runs=settings.visibility_max_unserved_runs,
            )
            if admission:
                await until_reachable("connecting to the engine's backlog", backlog.start, stop, ("kafka",))
                opened.push_async_callback(backlog.stop)
            await until_reachable("starting the engine", runner.start, stop, ("kafka",))
            opened.push_async_callback(runner.stop)
            opened.pop_all()  # started: the stop below closes them, in the order work flows back
    except StoppedWhileWaiting as stopped:
        log.info("stopped before the cell started", extra={"cell": cell_name, "waiting_for": str(stopped)})
        if owns_telemetry:
            telemetry.shutdown()
        return

    # An idle process has no work whose success would show that a dependency is back: it asks.
    OUTAGES.probe_with("kafka", producer.client.fetch_all_metadata)
    # A read that reaches the storage (FerretDB answers a ping without its PostgreSQL).
    OUTAGES.probe_with("mongodb", lambda: databases.control_db["cells"].find_one({"_id": cell_name}))
    OUTAGES.probe_with("rabbitmq", channels.probe)
    log.info("cell running", extra={"cell": cell_name, "partitions": cell.partitions})
    stopping = asyncio.Event()
    sampler = StorageSampler(
        cell_name, store, apps, usage, runner.owned, timedelta(seconds=settings.storage_sample_seconds)
    )
    following = every(
        NAMESPACES_REFRESH_SECONDS, stopping, runner.follow_namespaces, log, "following the cell's namespaces"
    )
    running = [
        asyncio.create_task(following, name="namespaces"),
        asyncio.create_task(sampler.run(stopping), name="storage"),
        asyncio.create_task(reporter.run(stopping), name="reporter"),
    ]
    supervisor = asyncio.create_task(runner.supervise(), name="engine")
    running.append(asyncio.create_task(relay.run(), name="report-relay"))
    if workers:
        running.append(asyncio.create_task(supervisor_of_workers.run(), name="workers"))
    if admission:
        running.append(asyncio.create_task(admitter.run(), name="admission"))
    stopper = asyncio.create_task(stop.wait(), name="stop")
    crashed = False
    try:
        done, _ = await asyncio.wait([*running, supervisor, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                crashed = True
                raise task.exception()  # type: ignore[misc]
        log.info("stopping: finishing work in flight", extra={"bound_seconds": settings.shutdown_seconds})
    finally:
        # In the order work flows back: no new work, workers finish (or hand back) what they hold,
        # their reports reach Kafka, the engine commits its batch and leaves the group, then connections.
        # The shares add up to the bound: when everything hangs (a frozen broker), each step still gets
        # its own. The workers' share holds their grace (a third of the bound) and the SIGKILL after it.
        bounded = BoundedStop(f"cell {cell_name}", settings.shutdown_seconds)

        async def background() -> None:
            stopping.set()
            await asyncio.gather(*running, return_exceptions=True)

        async def engine() -> None:
            stopper.cancel()
            supervisor.cancel()
            await runner.stop()

        async def producers() -> None:
            await producer.stop()
            if metering_producer is not producer:
                await metering_producer.stop()

        await bounded.step("admission", admitter.stop, share=0.1)
        if admission:
            await bounded.step("admission backlog", backlog.stop, share=0.05)
        await bounded.step("workers", supervisor_of_workers.stop, share=0.38)
        await bounded.step("report relay", relay.stop, share=0.08)
        await bounded.step("background tasks", background, share=0.05)
        await bounded.step("engine", engine, share=0.2)
        await bounded.step("kafka producers", producers, share=0.05)
        await bounded.step("broker connections", channels.close, share=0.05)
        await bounded.step("databases", databases.close, share=0.04)
        bounded.report()
        for task in [*running, supervisor, stopper]:
            task.cancel()  # what an abandoned step left running
        OUTAGES.stop_probing()
        if owns_telemetry:
            telemetry.shutdown()
        log.info("cell stopped", extra={"cell": cell_name, "abandoned": bounded.abandoned})
        if not crashed:  # a crash's own exception says more
            bounded.raise_if_overran()
