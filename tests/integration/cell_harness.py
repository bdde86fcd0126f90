"""Running real cell processes in tests: provisioning a unique cell and namespace, starting and killing
``perdure cell run`` as a subprocess, and awaiting run-closed notifications from RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aiokafka import AIOKafkaProducer

from perdure.infra.settings import Endpoints, Settings, load_settings
from perdure.infra.topic_contents import records_so_far
from perdure.platform.control.namespace_requests import create_namespace, provision_namespace
from perdure.platform.control.provisioning import ProvisionedNamespace, create_cell
from perdure.platform.core import history as h
from perdure.platform.core.outbox import RunClosed
from perdure.platform.core.usage import UsageRecord
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.messaging.usage_producer import ensure_metering_topic
from perdure.platform.protocol.cell_wire import TaskEnvelope, decode_envelope, tasks_topic
from perdure.platform.protocol.vhost_layout import RESULTS_EXCHANGE
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.model import Quota
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url

REPO = Path(__file__).resolve().parents[2]
PERDURE = Path(sys.executable).parent / "perdure"


@dataclass
class CellUnderTest:
    settings: Settings
    env: dict[str, str]
    cell: str
    namespace: str
    workdir: Path
    processes: list[CellProcess] = field(default_factory=list)

    def start_process(self, name: str = "p") -> CellProcess:
        process = CellProcess(self, f"{name}{len(self.processes)}")
        self.processes.append(process)
        return process

    def metering_process(self) -> CellProcess:
        """``perdure metering run`` with this cell's settings (killed with the cell's processes)."""
        process = CellProcess(
            self, f"metering{len(self.processes)}", ("metering", "run"), r'"metering running"'
        )
        self.processes.append(process)
        return process

    async def client(self) -> OpsClient:
        return await OpsClient.connect(self.settings, self.namespace)


@dataclass
class TenantCell:
    """A cell whose namespaces belong to tenants (one account each), by the labels a test gave them."""

    cell: CellUnderTest
    namespaces: dict[str, ProvisionedNamespace]

    def __getattr__(self, label: str) -> ProvisionedNamespace:
        try:
            return self.namespaces[label]
        except KeyError:
            raise AttributeError(label) from None

    def connection_string(self, label: str) -> str:
        provisioned = self.namespaces[label]
        assert provisioned.connection_string is not None, "the key is shown only when it is created"
        return provisioned.connection_string


async def provision_tenants(
    endpoints: Endpoints,
    workdir: Path,
    quotas: dict[str, Quota],
    *,
    partitions: int = 2,
    app: str = "tests.integration.cell_app:app",
    tenant_hosted: frozenset[str] = frozenset(),
    apps: dict[str, str] | None = None,
    **env: str,
) -> TenantCell:
    """A unique cell, and a namespace per label with its quota, each in an account of its own (whose
    workers the platform runs, unless its label is ``tenant_hosted``)."""
    suffix = uuid.uuid4().hex[:8]
    variables = settings_env(endpoints, f"t{suffix}")
    settings = load_settings(**{k.removeprefix("PERDURE_").lower(): v for k, v in variables.items()})
    cell_name = f"c-{suffix}"
    await create_cell(settings, cell_name, partitions)
    databases = Databases.connect(settings)
    for label in quotas:
        await TenancyStore(databases.control_db).create_account(f"acct-{label}")
    await databases.close()
    namespaces = {
        label: await provision_namespace(
            settings,
            f"{label}-{suffix}",
            (apps or {}).get(label, app),
            cell=cell_name,
            account=f"acct-{label}",
            quota=quota,
            hosting="tenant" if label in tenant_hosted else "platform",
        )
        for label, quota in quotas.items()
    }
    process_env = {**os.environ, **variables, "PYTHONPATH": str(REPO), **env}
    cell = CellUnderTest(settings, process_env, cell_name, "", workdir)
    return TenantCell(cell, namespaces)


async def run_perdure(tenants: TenantCell, *args: str) -> tuple[int, str, str]:
    """A ``perdure`` command with the cell's settings: its exit code, output and errors."""
    process = await asyncio.create_subprocess_exec(
        str(PERDURE),
        *args,
        env=tenants.cell.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class CellProcess:
    """``perdure cell run`` (or another long-running ``perdure`` command) in a subprocess; its log lines
    can be awaited."""

    def __init__(
        self,
        owner: CellUnderTest,
        name: str,
        command: tuple[str, ...] | None = None,
        ready: str = r'"partitions assigned".*"partitions": \[\d',
    ) -> None:
        self.owner = owner
        self.name = name
        self.command = command or ("cell", "run", owner.cell)
        self.ready = ready
        self.log = owner.workdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self._lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> CellProcess:
        self.proc = await asyncio.create_subprocess_exec(
            str(PERDURE),
            *self.command,
            env=self.owner.env,
            cwd=str(self.owner.workdir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read())
        await self.wait_for_log(self.ready, timeout=60)
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log.open("a") as out:
            while True:
                try:
                    raw = await self.proc.stdout.readline()
                except ValueError:  # a line past the reader's limit: taken in pieces (and seen by tests)
                    raw = await self.proc.stdout.read(64 * 1024)
                if not raw:
                    break
                line = raw.decode(errors="replace")
                out.write(line)
                out.flush()
                self._lines.append(line)
                self._changed.set()

    def last_lines(self, count: int) -> list[str]:
        return self._lines[-count:]

    def lines(self, containing: str) -> list[str]:
        """The log lines so far that contain ``containing``."""
        return [line for line in self._lines if containing in line]

    async def wait_for_log(self, pattern: str, timeout: float = 30) -> str:
        regex = re.compile(pattern)
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for line in self._lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self._lines)
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(
                        f"cell process {self.name} exited ({self.proc.returncode}):\n"
                        + "".join(self._lines[-30:])
                    )
                self._changed.clear()
                await self._changed.wait()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.killpg(self.proc.pid, sig)

    async def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return code


class ClosedRuns:
    """Every run-closed notification of a namespace, from a queue bound before the test starts work."""

    def __init__(self) -> None:
        self.closed: dict[str, RunClosed] = {}
        self._arrived = asyncio.Event()

    def on_message(self, message: RunClosed) -> None:
        if message.status != "continued_as_new":
            self.closed[message.workflow_id] = message
        self._arrived.set()

    async def wait(self, workflow_ids: set[str] | list[str], timeout: float = 60) -> dict[str, RunClosed]:
        wanted = set(workflow_ids)
        async with asyncio.timeout(timeout):
            while not wanted <= self.closed.keys():
                self._arrived.clear()
                await self._arrived.wait()
        return {w: self.closed[w] for w in wanted}


@contextlib.asynccontextmanager
async def closed_runs(cell: CellUnderTest) -> AsyncIterator[ClosedRuns]:
    watcher = ClosedRuns()
    connection = await aio_pika.connect(namespace_amqp_url(cell.settings, cell.cell, cell.namespace))
    channel = await connection.channel()
    exchange = await channel.get_exchange(RESULTS_EXCHANGE)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "closed.#")

    async def deliver(message: AbstractIncomingMessage) -> None:
        async with message.process():
            watcher.on_message(RunClosed.model_validate_json(message.body))

    await queue.consume(deliver)
    try:
        yield watcher
    finally:
        await connection.close()


def settings_env(endpoints: Endpoints, prefix: str) -> dict[str, str]:
    credentials = {
        f"PERDURE_{name.upper()}": value
        for name, value in (
            ("kafka_sasl_username", endpoints.kafka_sasl_username),
            ("kafka_sasl_password", endpoints.kafka_sasl_password),
        )
        if value is not None
    }
    return {
        **credentials,
        "PERDURE_KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
        "PERDURE_MONGODB_URI": endpoints.mongodb_uri,
        "PERDURE_RABBITMQ_URL": endpoints.rabbitmq_url,
        "PERDURE_RABBITMQ_MANAGEMENT_URL": endpoints.rabbitmq_management_url,
        "PERDURE_DATABASE_PREFIX": prefix,
        # Vhosts are not per database prefix: each test's system namespace is its own.
        "PERDURE_SYSTEM_NAMESPACE": f"{prefix.lower().replace('_', '-')}-system",
        "PERDURE_ENGINE_SESSION_TIMEOUT_MS": "6000",
        "PERDURE_LOG_LEVEL": "INFO",
        "PERDURE_LOG_FORMAT": "json",  # the tests read the processes' lines
    }


async def provision(
    endpoints: Endpoints,
    workdir: Path,
    *,
    partitions: int = 4,
    app: str = "tests.integration.cell_app:app",
    pythonpath: list[str] | None = None,
) -> CellUnderTest:
    suffix = uuid.uuid4().hex[:10]
    prefix = f"t{suffix}"
    variables = settings_env(endpoints, prefix)
    env = {
        **os.environ,
        **variables,
        "PYTHONPATH": os.pathsep.join([*(pythonpath or []), str(REPO)]),
        # Tests rewrite app modules within a second: never run a stale bytecode cache.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    settings = load_settings(**{k.removeprefix("PERDURE_").lower(): v for k, v in variables.items()})
    cell, namespace = f"c-{suffix}", f"n-{suffix}"
    for path in pythonpath or []:
        if path not in sys.path:
            sys.path.insert(0, path)
    await create_cell(settings, cell, partitions)
    # The cell's own behaviour is under test here, not the namespace's quota.
    await create_namespace(settings, namespace, app, cell, quota=Quota.unthrottled())
    return CellUnderTest(settings, env, cell, namespace, workdir)


def count_lines(ledger: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if ledger.exists():
        for line in ledger.read_text().splitlines():
            counts[line] = counts.get(line, 0) + 1
    return counts


def payload_value(closed: RunClosed) -> Any:
    from perdure.platform.core.payloads import default_converter

    return default_converter.from_payload(closed.result) if closed.result else None


async def eventually(check: Any, timeout: float = 30, every: float | None = None) -> Any:
    """Retry an async check until it stops failing (an assertion, or a run not there yet); for state held
    by another process
    that sends no event of its own."""
    from tenacity import (
        AsyncRetrying,
        retry_if_exception_type,
        stop_after_delay,
        wait_exponential,
        wait_fixed,
    )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((AssertionError, LookupError)),
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=0.02, max=0.5) if every is None else wait_fixed(every),
        reraise=True,
    ):
        with attempt:
            return await check()
    return None


async def completed_activities(client: OpsClient, workflow_id: str) -> int:
    history = await client.history(workflow_id)
    return sum(isinstance(e, h.ActivityTaskCompleted) for e in history)


async def admissions(cell: CellUnderTest, namespace: str) -> list[tuple[float, TaskEnvelope]]:
    """What admission let into the cell's tasks topic for a namespace so far, with when (the record's
    timestamp, in seconds since the epoch: admission produces a request once it is admitted, so this is
    admission's own clock, not the engine's, whose pace depends on the machine)."""
    found: list[tuple[float, TaskEnvelope]] = []
    async with asyncio.timeout(60):
        records = await records_so_far(cell.settings.endpoints(cell.cell).kafka(), tasks_topic(cell.cell))
    for record in records:
        envelope = decode_envelope(record.value, record.key)
        if envelope.namespace == namespace:
            found.append((record.timestamp / 1000, envelope))
    return sorted(found, key=lambda admitted: admitted[0])


async def publish_usage(settings: Settings, records: list[UsageRecord]) -> None:
    """Usage records on the metering topic, as the engine sends them (metering counts them from there)."""
    await ensure_metering_topic(settings)
    producer = AIOKafkaProducer(**settings.endpoints().kafka(), acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send(
                settings.metering_topic, record.model_dump_json().encode(), key=record.namespace.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
