"""Chaos run: steady load of mixed workflows (activities, timers, children, signals) on a cell of several
``perdure cell run`` processes while cell processes are SIGKILLed (and replaced) and Kafka, FerretDB,
PostgreSQL and RabbitMQ are SIGKILLed and restarted, with hostile messages sent to every consumer all
along. At the end it checks and prints: every started run closed with the right result, none lost,
no history event duplicated, how often each activity ran (at least once; more only after a fault),
metering equal to the histories, every hostile message dead-lettered with its reason, no process
crashed by itself, and the time from each fault until a new workflow ran end to end.

    .venv/bin/python -m bench.chaos                      # 20 cell kills, each service twice, 10,000 each
    .venv/bin/python -m bench.chaos --cell-kills 2 --service-restarts 1 --fuzz 300   # a short one

Needs the local stack up (``perdure stack up``); restarts its services with ``perdure stack up``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from bench.chaos_app import Mixed, Probe
from bench.hostile_messages import consumers, draw_refused
from bench.machine import describe_machine
from bench.reconcile import counted_from_histories, metered
from perdure.infra.logs import configure_logging
from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.infra.settings import Settings, load_settings
from perdure.platform.cell.dead_letters import read_letters
from perdure.platform.control.namespace_requests import provision_namespace
from perdure.platform.control.provisioning import create_cell
from perdure.platform.core import history as h
from perdure.platform.core.usage import ACTION_METRICS
from perdure.platform.messaging.amqp_dead_letters import REASON_HEADER
from perdure.platform.messaging.usage_producer import metering_dlq_topic
from perdure.platform.protocol.cell_wire import dlq_topic, execution_key, tasks_topic
from perdure.platform.protocol.vhost_layout import (
    INGRESS_DEAD_LETTERS,
    INGRESS_QUEUE,
    WORKER_REPORTS_DEAD_LETTERS,
    WORKER_REPORTS_QUEUE,
)
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.run_store import RunStore
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.model import Quota
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url, tenant_user
from perdure.tenants import WorkflowHandle
from perdure.tenants.client import Client

REPO = Path(__file__).resolve().parents[1]
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
PERDURE = Path(sys.executable).parent / "perdure"
SERVICES = ("kafka", "mongodb", "postgres", "rabbitmq")
APP = "bench.chaos_app:app"
CLOSE_EVENTS = (
    h.WorkflowExecutionCompleted,
    h.WorkflowExecutionFailed,
    h.WorkflowExecutionCanceled,
    h.WorkflowExecutionTerminated,
    h.WorkflowExecutionTimedOut,
    h.WorkflowExecutionContinuedAsNew,
)


# An activity runs again when a fault strikes while it is in hand (its task redelivered, its outcome
# lost with a killed process): a few times at most, however long the run.
MAX_ACTIVITY_RUNS = 3


@dataclass
class Plan:
    cell_kills: int = 20
    service_restarts: int = 2  # of each service
    fuzz: int = 10_000  # hostile messages per consumer
    processes: int = 3  # `perdure cell run` processes of the cell
    rate: float = 4.0  # workflows started per second
    partitions: int = 6
    session_timeout_ms: int = 10_000
    seed: int = 1


@dataclass
class Report:
    started: int = 0
    right: int = 0
    wrong: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicated_events: list[str] = field(default_factory=list)
    activity_runs: collections.Counter[int] = field(default_factory=collections.Counter)  # runs -> activities
    never_ran: list[str] = field(default_factory=list)
    recoveries: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    fuzz_sent: dict[str, int] = field(default_factory=dict)
    fuzz_missing: dict[str, int] = field(default_factory=dict)  # sent but not in the dead letters
    fuzz_without_reason: dict[str, int] = field(default_factory=dict)
    crashed: list[str] = field(default_factory=list)
    metering_differences: dict[str, tuple[int, int]] = field(
        default_factory=dict
    )  # metric -> (billed, counted)
    seconds: float = 0.0
    aborted: bool = False  # the run ended early (a fault it did not recover from)

    @property
    def faults(self) -> int:
        return sum(len(v) for v in self.recoveries.values())

    def print(self) -> None:
        print(f"machine: {describe_machine()}")
        print(f"chaos run: {self.seconds:.0f} s, {self.faults} faults")
        print(
            f"runs: {self.started} started, {self.right} closed with the right result, "
            f"{len(self.wrong)} wrong, {len(self.lost)} lost"
        )
        print(f"history events duplicated: {len(self.duplicated_events)}")
        runs = ", ".join(f"{n} activities ran {times}x" for times, n in sorted(self.activity_runs.items()))
        print(f"activity executions (at least once): {runs}; never ran: {len(self.never_ran)}")
        print(
            "metering equal to the histories: "
            + ("yes" if not self.metering_differences else f"no {self.metering_differences}")
        )
        for consumer, sent in self.fuzz_sent.items():
            print(
                f"hostile messages to {consumer}: {sent} sent, {self.fuzz_missing.get(consumer, 0)} not "
                f"dead-lettered, {self.fuzz_without_reason.get(consumer, 0)} without a reason"
            )
        print(f"processes that crashed by themselves: {len(self.crashed)} {self.crashed}")
        print("time from a fault until a new workflow ran end to end (s):")
        for kind, seconds in sorted(self.recoveries.items()):
            print(
                f"  {kind:<10} x{len(seconds):<3} "
                f"p50 {statistics.median(seconds):6.1f}  max {max(seconds):6.1f}"
            )

    def failures(self) -> list[str]:
        """What broke a guarantee (empty when the run held every one)."""
        broken = []
        if self.wrong or self.lost:
            broken.append(f"runs wrong {self.wrong[:5]} or lost {self.lost[:5]}")
        if self.duplicated_events:
            broken.append(f"duplicated history events in {self.duplicated_events[:5]}")
        if self.never_ran:
            broken.append(f"activities that never ran: {self.never_ran[:5]}")
        # At least once, and more only where a fault struck: never more than a few times.
        if self.activity_runs and max(self.activity_runs) > MAX_ACTIVITY_RUNS:
            broken.append(f"activities ran more than {MAX_ACTIVITY_RUNS} times: {dict(self.activity_runs)}")
        if self.metering_differences:
            broken.append(f"metering differs from the histories: {self.metering_differences}")
        if any(self.fuzz_missing.values()) or any(self.fuzz_without_reason.values()):
            broken.append(
                f"hostile messages not dead-lettered {self.fuzz_missing} "
                f"/ without a reason {self.fuzz_without_reason}"
            )
        if self.crashed:
            broken.append(f"crashed: {self.crashed}")
        return broken


class Platform:
    """The cell's processes and the stack's services, started, killed and restarted."""

    def __init__(self, settings: Settings, env: dict[str, str], cell: str, logs: Path) -> None:
        self.settings = settings
        self.env = env
        self.cell = cell
        self.logs = logs
        self.cells: list[asyncio.subprocess.Process] = []
        self.killed: set[int] = set()
        self.metering: asyncio.subprocess.Process | None = None

    async def _spawn(self, *command: str, name: str) -> asyncio.subprocess.Process:
        log = (self.logs / f"{name}.log").open("ab")
        return await asyncio.create_subprocess_exec(
            str(PERDURE), *command, env=self.env, stdout=log, stderr=log, start_new_session=True
        )

    async def start_cell_process(self) -> None:
        self.cells.append(await self._spawn("cell", "run", self.cell, name=f"cell-{len(self.cells)}"))

    async def start_metering(self) -> None:
        self.metering = await self._spawn("metering", "run", name="metering")

    async def kill_cell_process(self, rng: random.Random) -> None:
        alive = [p for p in self.cells if p.returncode is None]
        victim = rng.choice(alive)
        self.killed.add(victim.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)
        await victim.wait()
        await self.start_cell_process()  # its replacement, as an orchestrator would start one

    def kill_service(self, service: str) -> None:
        home = self.settings.stack_dir / service
        pid_file = home / "data" / "postmaster.pid" if service == "postgres" else home / f"{service}.pid"
        pid = int(pid_file.read_text().split()[0])
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def restart_services(self) -> None:
        for attempt in range(5):
            process = await asyncio.create_subprocess_exec(
                str(PERDURE),
                "stack",
                "up",
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await process.communicate()
            if process.returncode == 0:
                return
            await asyncio.sleep(2 * (attempt + 1))  # a killed service's leftovers may still be exiting
        raise RuntimeError(f"the stack did not come back: {output.decode()[-2000:]}")

    def crashed(self) -> list[str]:
        """Processes that ended without being killed here."""
        ended = [p for p in self.cells if p.returncode is not None and p.pid not in self.killed]
        names = [f"cell process {p.pid} (exit {p.returncode})" for p in ended]
        if self.metering is not None and self.metering.returncode is not None:
            names.append(f"metering (exit {self.metering.returncode})")
        return names

    async def stop(self) -> None:
        for process in [*self.cells, *([self.metering] if self.metering else [])]:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.cells, *([self.metering] if self.metering else [])]:
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


class Load:
    """Mixed workflows started at a steady rate, each signalled once started; their handles kept."""

    def __init__(self, client: Client, ledger: str, rate: float) -> None:
        self.client = client
        self.ledger = ledger
        self.rate = rate
        self.handles: dict[str, Any] = {}
        self.failed_starts: list[str] = []
        self._starting: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            workflow_id = f"mixed-{i}"
            task = asyncio.create_task(self._start(workflow_id))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
            i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1 / self.rate)
        await asyncio.gather(*self._starting, return_exceptions=True)

    async def _start(self, workflow_id: str) -> None:
        try:
            handle = await self.client.start_workflow(
                Mixed.run, self.ledger, workflow_id, id=workflow_id, request_id=workflow_id
            )
            self.handles[workflow_id] = handle
            await handle.signal(Mixed.proceed)
        except Exception as exc:  # a start still unanswered at the client's deadline
            self.failed_starts.append(f"{workflow_id}: {type(exc).__name__}: {exc}")


class Fuzzer:
    """Hostile messages to every consumer, a chunk at a time, until all are sent (retried through
    outages: a message sent twice is dead-lettered twice, which the check allows)."""

    def __init__(
        self,
        settings: Settings,
        cell: str,
        namespace: str,
        vhost: str,
        key: str,
        messages: dict[str, list[bytes]],
    ) -> None:
        self.settings = settings
        self.cell = cell
        self.namespace = namespace
        self.vhost = vhost
        self.key = key
        self.messages = messages
        self.sent: dict[str, int] = collections.Counter()

    async def run(self, chunk: int = 50) -> None:
        producer = AIOKafkaProducer(
            **self.settings.endpoints(self.cell).kafka(),
            acks="all",
            enable_idempotence=True,
            max_request_size=2**21,
        )
        await producer.start()
        tenant = await aio_pika.connect_robust(self.key)
        try:
            channel = await tenant.channel(publisher_confirms=True)
            targets = {
                # Persistent, as a client's and a worker's are: a broker restart keeps them queued.
                "ingress": lambda body: channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=PERSISTENT), routing_key=INGRESS_QUEUE
                ),
                "worker reports": lambda body: channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=PERSISTENT), routing_key=WORKER_REPORTS_QUEUE
                ),
                "cell topic": lambda body: producer.send_and_wait(
                    tasks_topic(self.cell), body, key=execution_key(self.namespace, "fuzzed")
                ),
                "metering topic": lambda body: producer.send_and_wait(
                    self.settings.metering_topic, body, key=self.namespace.encode()
                ),
            }
            longest = max(len(m) for m in self.messages.values())
            for start in range(0, longest, chunk):
                for consumer, send in targets.items():
                    for body in self.messages[consumer][start : start + chunk]:
                        await _until_sent(send, body)
                        self.sent[consumer] += 1
                await asyncio.sleep(0.2)
        finally:
            await tenant.close()
            await producer.stop()


async def _until_sent(send: Any, body: bytes) -> None:
    for attempt in range(1, 1000):
        try:
            await asyncio.wait_for(send(body), 30)
            return
        except Exception:
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
    raise RuntimeError("a hostile message could not be sent in 1000 attempts")


async def _until_answered(
    client: Client, ledger: str, tag: str, deadline: float, platform: Platform
) -> float:
    """Seconds until a new workflow ran end to end (looking every few seconds whether the platform's
    processes are still there to run it)."""
    began = time.monotonic()
    handle: WorkflowHandle | None = None
    while time.monotonic() - began < deadline:
        if crashed := platform.crashed():
            raise RuntimeError(f"processes ended by themselves: {crashed} (their logs: {platform.logs})")
        try:
            if handle is None:
                start = client.start_workflow(Probe.run, ledger, tag, id=tag, request_id=tag)
                handle = await asyncio.wait_for(start, 10)
            assert handle is not None
            await handle.result(timeout=5)
            return time.monotonic() - began
        except Exception:  # not yet: the start is retried with its request id, the result awaited again
            await asyncio.sleep(0.5)
    raise RuntimeError(f"no workflow ran end to end within {deadline:.0f} s of a fault")


async def run_chaos(plan: Plan, settings: Settings | None = None) -> Report:
    rng = random.Random(plan.seed)
    suffix = uuid.uuid4().hex[:8]
    prefix = f"chaos{suffix}"
    base = settings or load_settings()
    settings = base.model_copy(
        update={"database_prefix": prefix, "system_namespace": f"chaos-{suffix}-system"}
    )
    cell, namespace = f"chaos-{suffix}", f"chaos-{suffix}"
    # The hostile messages come from a tenant of their own on the same cell, through the same consumers:
    # what it sends must cost the well-behaved tenant nothing (its own backlog is its own).
    hostile_namespace = f"chaos-{suffix}-hostile"
    work, ledger = _workdir()
    report = Report()
    hostile = {
        name: draw_refused(c, plan.fuzz, plan.seed)
        for name, c in consumers(hostile_namespace, "fuzzed").items()
    }

    await create_cell(settings, cell, plan.partitions)
    databases = Databases.connect(settings)
    await TenancyStore(databases.control_db).create_account(f"acct-{suffix}")
    await databases.close()
    provisioned = await provision_namespace(
        settings,
        namespace,
        APP,
        cell=cell,
        account=f"acct-{suffix}",
        quota=Quota.unthrottled(),
        hosting="platform",
    )
    assert provisioned.connection_string is not None
    attacker = await provision_namespace(
        settings, hostile_namespace, APP, cell=cell, account=f"acct-{suffix}", quota=Quota(), hosting="tenant"
    )
    assert attacker.connection_string is not None
    env = {
        **os.environ,
        "PERDURE_DATABASE_PREFIX": prefix,
        "PERDURE_SYSTEM_NAMESPACE": settings.system_namespace,
        "PERDURE_ENGINE_SESSION_TIMEOUT_MS": str(plan.session_timeout_ms),
        "PERDURE_LOG_LEVEL": "INFO",
        "PERDURE_LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }
    platform = Platform(settings, env, cell, work)
    began = time.monotonic()
    try:
        for _ in range(plan.processes):
            await platform.start_cell_process()
        await platform.start_metering()
        async with await Client.connect(provisioned.connection_string, request_timeout=600) as client:
            await _until_answered(client, str(ledger), "probe-warm", 180, platform)
            load = Load(client, str(ledger), plan.rate)
            fuzzer = Fuzzer(
                settings, cell, hostile_namespace, attacker.record.vhost, attacker.connection_string, hostile
            )
            loading = asyncio.create_task(load.run())
            fuzzing = asyncio.create_task(fuzzer.run())
            faults = ["cell"] * plan.cell_kills + [s for s in SERVICES for _ in range(plan.service_restarts)]
            rng.shuffle(faults)
            for n, fault in enumerate(faults):
                await asyncio.sleep(rng.uniform(1.0, 4.0))
                injected = time.monotonic()
                if fault == "cell":
                    await platform.kill_cell_process(rng)
                else:
                    platform.kill_service(fault)
                    await asyncio.sleep(rng.uniform(2.0, 6.0))  # the outage
                    await platform.restart_services()
                await _until_answered(client, str(ledger), f"probe-{n}", 300, platform)
                report.recoveries[fault].append(time.monotonic() - injected)
                print(
                    f"fault {n + 1}/{len(faults)}: {fault}, "
                    f"recovered in {report.recoveries[fault][-1]:.1f} s",
                    flush=True,
                )
            await fuzzing
            load.stopping.set()
            await loading
            report.started = len(load.handles)
            report.lost.extend(load.failed_starts)
            for workflow_id, handle in load.handles.items():
                try:
                    result = await handle.result(timeout=600)
                except Exception as exc:
                    report.lost.append(f"{workflow_id}: {type(exc).__name__}: {exc}")
                    continue
                if result == f"{workflow_id}-a-done:woke:{workflow_id}-b-done":
                    report.right += 1
                else:
                    report.wrong.append(f"{workflow_id}: {result!r}")
        report.crashed = platform.crashed()
        await _check_histories(settings, cell, namespace, report)
        _count_activity_runs(ledger, load.handles, report)
        await _check_dead_letters(settings, cell, attacker.record.vhost, fuzzer.sent, hostile, report)
        await _check_metering(settings, cell, namespace, report)
    except BaseException:
        report.aborted = True
        raise
    finally:
        await platform.stop()
        report.seconds = time.monotonic() - began
        if report.aborted or report.failures():  # kept for a look: databases, topics, the processes' logs
            print(f"kept for inspection: database prefix {prefix}, cell {cell}, logs in {work}")
        else:
            await cleanup(settings, cell, [namespace, hostile_namespace])
    return report


def _workdir() -> tuple[Path, Path]:
    """A folder for the processes' logs and the ledger, which the namespace's sandboxed workers write."""
    work = Path(tempfile.mkdtemp(prefix="perdure-chaos-"))
    work.chmod(0o777)
    ledger = work / "ledger"
    ledger.touch()
    ledger.chmod(0o666)
    return work, ledger


async def _check_histories(settings: Settings, cell: str, namespace: str, report: Report) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        store = RunStore(mongo[settings.cell_database(cell)])
        async for document in store.runs.find({"namespace": namespace}):
            events = await store.read_history(document["_id"], document)
            ids = [e.event_id for e in events]
            completions = [
                e.scheduled_event_id
                for e in events
                if isinstance(e, h.ActivityTaskCompleted | h.ActivityTaskFailed)
            ]
            closes = [e for e in events if isinstance(e, CLOSE_EVENTS)]
            if (
                ids != list(range(1, len(ids) + 1))
                or len(completions) != len(set(completions))
                or len(closes) > 1
            ):
                report.duplicated_events.append(str(document["_id"]))
    finally:
        await mongo.close()


def _count_activity_runs(ledger: Path, handles: dict[str, Any], report: Report) -> None:
    runs = collections.Counter(line.split()[0] for line in ledger.read_text().splitlines() if line)
    for workflow_id in handles:
        for part in ("a", "b"):
            times = runs.get(f"{workflow_id}-{part}", 0)
            if times == 0:
                report.never_ran.append(f"{workflow_id}-{part}")
            else:
                report.activity_runs[times] += 1


async def _check_dead_letters(
    settings: Settings,
    cell: str,
    vhost: str,
    sent: dict[str, int],
    hostile: dict[str, list[bytes]],
    report: Report,
) -> None:
    report.fuzz_sent = dict(sent)
    found: dict[str, dict[bytes, str]] = {}
    connection = await aio_pika.connect(namespace_amqp_url(settings, cell, vhost))
    try:
        channel = await connection.channel()
        for consumer, queue in (
            ("ingress", INGRESS_DEAD_LETTERS),
            ("worker reports", WORKER_REPORTS_DEAD_LETTERS),
        ):
            letters = await channel.declare_queue(queue, durable=True, passive=True)
            found[consumer] = {}
            deadline = time.monotonic() + 120
            while (
                len(found[consumer]) < len(set(hostile[consumer][: sent[consumer]]))
                and time.monotonic() < deadline
            ):
                letter = await letters.get(no_ack=True, fail=False)
                if letter is None:
                    await asyncio.sleep(0.5)
                    continue
                found[consumer][letter.body] = str((letter.headers or {}).get(REASON_HEADER, ""))
    finally:
        await connection.close()
    kafka = settings.endpoints(cell).kafka()
    for consumer, topic in (
        ("cell topic", dlq_topic(cell)),
        ("metering topic", metering_dlq_topic(settings)),
    ):
        deadline = time.monotonic() + 120
        while True:
            found[consumer] = {letter.value: letter.reason for letter in await read_letters(kafka, topic)}
            if (
                set(hostile[consumer][: sent[consumer]]) <= found[consumer].keys()
                or time.monotonic() > deadline
            ):
                break
            await asyncio.sleep(1)
    for consumer, messages in hostile.items():
        expected = set(messages[: sent[consumer]])
        report.fuzz_missing[consumer] = len(expected - found[consumer].keys())
        report.fuzz_without_reason[consumer] = sum(
            1 for body in expected if body in found[consumer] and not found[consumer][body]
        )


async def _check_metering(settings: Settings, cell: str, namespace: str, report: Report) -> None:
    counted = await counted_from_histories(settings, cell, namespace)
    deadline = time.monotonic() + 180
    while True:
        billed = await metered(settings, namespace)
        differences = {
            metric: (billed[metric], counted[metric])
            for metric in ACTION_METRICS
            if metric != "query" and billed[metric] != counted[metric]
        }
        if not differences or time.monotonic() > deadline:
            report.metering_differences = differences
            return
        await asyncio.sleep(2)


async def cleanup(settings: Settings, cell: str, namespaces: list[str]) -> None:
    endpoints = settings.endpoints(cell)
    admin = AIOKafkaAdminClient(**endpoints.kafka())
    await admin.start()
    try:
        topics = [tasks_topic(cell), dlq_topic(cell), settings.metering_topic, metering_dlq_topic(settings)]
        existing = set(await admin.list_topics())
        await admin.delete_topics([t for t in topics if t in existing])
    finally:
        await admin.close()
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(endpoints.mongodb_uri)
    for database in (settings.control_database, settings.cell_database(cell), settings.metering_database):
        await mongo.drop_database(database)
    await mongo.close()
    async with RabbitMQAdmin(endpoints.rabbitmq_management_url) as rabbit:
        for vhost in [*namespaces, settings.system_namespace]:
            if await rabbit.vhost_exists(vhost):
                await rabbit.delete_vhost(vhost)
            if await rabbit.user_exists(tenant_user(vhost)):
                await rabbit.delete_user(tenant_user(vhost))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cell-kills", type=int, default=20)
    parser.add_argument(
        "--service-restarts", type=int, default=2, help="of each of Kafka, FerretDB, PostgreSQL, RabbitMQ"
    )
    parser.add_argument("--fuzz", type=int, default=10_000, help="hostile messages per consumer")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--rate", type=float, default=4.0, help="workflows started per second")
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    # The run's own clients ride out the outages it causes: one line each, as the platform tells them.
    configure_logging("WARNING")
    outcome = asyncio.run(
        run_chaos(
            Plan(
                cell_kills=arguments.cell_kills,
                service_restarts=arguments.service_restarts,
                fuzz=arguments.fuzz,
                processes=arguments.processes,
                rate=arguments.rate,
                seed=arguments.seed,
            )
        )
    )
    outcome.print()
    broken = outcome.failures()
    for line in broken:
        print(f"BROKEN: {line}")
    sys.exit(1 if broken else 0)
