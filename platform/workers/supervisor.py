"""The worker supervisor of a cell process: one platform-hosted worker process per namespace of the cell
whose workers the platform runs, restarted with backoff when it dies, stopped when its namespace goes.

A worker is given one credential: a broker user of its namespace's vhost made for this supervisor
(``perdure-worker.<namespace>.<process>``, a fresh random password each start, removed on stop). The
system namespace's worker runs the control plane's own workflows and is trusted with the platform's
environment; no other worker is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from perdure.infra.periodic import every
from perdure.infra.rabbitmq_admin import rabbitmq_admin
from perdure.infra.settings import Settings
from perdure.platform.messaging.amqp_channels import AmqpChannels
from perdure.platform.protocol.vhost_layout import (
    ACTIVITIES_QUEUE,
    WORKFLOW_TASKS_QUEUE,
    namespace_user_permissions,
)
from perdure.platform.sandboxing.sandbox import Sandbox, die_with, sweep_cgroups
from perdure.platform.stores.artifacts import ArtifactStore, unpack
from perdure.platform.stores.control_store import ControlError, NamespaceRecord
from perdure.platform.stores.namespace_apps import NamespaceApps
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url

log = logging.getLogger("perdure.workers")
DRAIN_SECONDS = 300.0  # how long a previous version's worker may take to finish what it holds
MAX_BACKOFF_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0
CACHED_WORKFLOWS_PER_MB = 8
OUTPUT_DRAIN_SECONDS = 2.0  # for the last lines of an exited worker's output


@dataclass
class _Hosted:
    record: NamespaceRecord
    process: asyncio.subprocess.Process | None = None
    user: str | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start_at: float = 0.0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    sandbox: Sandbox | None = None
    version: int = 0  # of the deployment the running worker serves (0: the app by import path)
    idle: bool = False  # scaled to zero: started again when tasks wait
    draining: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    previous: list[asyncio.subprocess.Process] = field(default_factory=list, repr=False)


class WorkerSupervisor:
    def __init__(
        self,
        settings: Settings,
        cell: str,
        apps: NamespaceApps,
        artifacts: ArtifactStore,
        channels: AmqpChannels,
        *,
        refresh_seconds: float = 2.0,
    ) -> None:
        self.artifacts = artifacts
        self.channels = channels
        self.settings = settings
        self.cell = cell
        self.apps = apps
        self.refresh_seconds = refresh_seconds
        self.token = secrets.token_hex(6)
        self.starts = 0
        self._stopping_namespaces: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.workers: dict[str, _Hosted] = {}
        # A third of the process's stop bound: the engine and connections need the rest.
        self.stop_grace = settings.shutdown_seconds / 3

    def pid_of(self, namespace: str) -> int | None:
        hosted = self.workers.get(namespace)
        return hosted.process.pid if hosted and hosted.process and hosted.process.returncode is None else None

    async def run(self) -> None:
        if os.geteuid() == 0:
            await asyncio.to_thread(sweep_cgroups)
        await every(
            self.refresh_seconds, self.stopping, self._refresh, log, "refreshing the namespaces' workers"
        )

    async def _refresh(self) -> None:
        records = {r.name: r for r in await self.apps.all() if r.hosting == "platform"}
        for gone in self.workers.keys() - records.keys():
            # A namespace moved to another cell keeps its OS user: that cell's workers (maybe on this
            # machine) run as it; only a deleted one's goes.
            deleted = await self._deleted(gone)
            # In the background: a draining worker must not hold up the other namespaces' workers.
            stopping = asyncio.create_task(self._stop(self.workers.pop(gone), forget=deleted))
            self._stopping_namespaces.add(stopping)
            stopping.add_done_callback(self._stopping_namespaces.discard)
            log.info(
                "worker stopped: its namespace is gone" if deleted else "worker stopped: its namespace moved",
                extra={"namespace": gone},
            )
        now = time.monotonic()
        for name, record in records.items():
            hosted = self.workers.setdefault(name, _Hosted(record))
            hosted.record = record
            running = hosted.process is not None and hosted.process.returncode is None
            deployed = record.deployment.version if record.deployment else 0
            if running and deployed != hosted.version:
                # A new version: its worker starts, the old one drains (finishes what it holds).
                old, hosted.process = hosted.process, None
                assert old is not None
                hosted.previous.append(old)
                draining = asyncio.create_task(self._drain(hosted, old))
                hosted.draining.add(draining)
                draining.add_done_callback(hosted.draining.discard)
                running = False
                hosted.next_start_at = now
            if not running and hosted.idle and not await self._tasks_wait(record):
                continue
            if not running and now >= hosted.next_start_at:
                await self._start(hosted)

    async def _deleted(self, namespace: str) -> bool:
        try:
            record = await self.apps.control.get_namespace(namespace)
        except ControlError:
            return True
        return record.status == "deleted"

    async def _tasks_wait(self, record: NamespaceRecord) -> bool:
        """Whether work waits for a worker of the namespace (a passive declare counts at once)."""
        try:
            channel = await self.channels.channel(record.vhost)
            for name in (WORKFLOW_TASKS_QUEUE, ACTIVITIES_QUEUE):
                queue = await channel.declare_queue(name, durable=True, passive=True)
                if queue.declaration_result.message_count:
                    return True
        except Exception:
            log.warning("counting a namespace's waiting tasks failed", exc_info=True)
            return True  # better a worker too many than work left waiting
        return False

    async def _drain(self, hosted: _Hosted, process: asyncio.subprocess.Process) -> None:
        log.info("draining the previous version's worker", extra={"namespace": hosted.record.name})
        await self._end(process, DRAIN_SECONDS)
        log.info("previous version's worker drained", extra={"namespace": hosted.record.name})

    async def _end(self, process: asyncio.subprocess.Process, grace: float) -> None:
        """SIGTERM (the worker finishes the activities it holds), then SIGKILL after ``grace``."""
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the worker and whatever it started
            await process.wait()

    async def _start(self, hosted: _Hosted) -> None:
        record = hosted.record
        hosted.idle = False
        hosted.version = record.deployment.version if record.deployment else 0
        connection = await self._credential(hosted)
        given = {
            "PERDURE_CONNECTION": connection,
            "PERDURE_APP": record.app,
            "PERDURE_MAX_CONCURRENT_ACTIVITIES": str(record.quota.max_concurrent_activities),
            "PERDURE_ACTIVITIES_PER_SECOND": str(record.quota.actions_per_second),
            "PERDURE_ACTIVITY_BURST": str(record.quota.burst),
            # Runs whose instances the worker keeps (sticky tasks, continuations): a simple run's
            # instance takes some 12 KB, so a tenth of the worker's memory holds this many of them.
            "PERDURE_MAX_CACHED_WORKFLOWS": str(record.quota.worker_memory_mb * CACHED_WORKFLOWS_PER_MB),
            "PERDURE_WORKER_IDLE_SECONDS": str(self.settings.worker_idle_seconds),
            "PERDURE_WORKER_STOP_GRACE_SECONDS": str(self.stop_grace / 2),
        }
        module = ["-m", "perdure.platform.processes.hosted_worker"]
        if record.name == self.settings.system_namespace:
            # The control plane's own code: trusted with the platform's environment and interpreter.
            parent = os.getpid()
            hosted.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *module,
                env={**os.environ, **given},
                start_new_session=True,
                preexec_fn=lambda: die_with(parent),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        else:
            hosted.sandbox = hosted.sandbox or Sandbox.for_namespace(
                self.settings, record.name, record.quota, self.token
            )
            options = await asyncio.to_thread(hosted.sandbox.prepare)
            if record.deployment is not None:
                # The deployed artifact, unpacked once into the namespace's own folder.
                deployment = record.deployment
                folder = hosted.sandbox.artifact_folder(deployment.artifact)
                if not folder.exists():
                    data = await self.artifacts.get(deployment.artifact)
                    await asyncio.to_thread(unpack, data, deployment.kind, folder)
                given.update(PYTHONPATH=str(folder), PERDURE_APP=deployment.app)
            hosted.process = await asyncio.create_subprocess_exec(
                str(self.settings.worker_python),
                *module,
                env=hosted.sandbox.environment(given),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                **options,  # type: ignore[arg-type]
            )
            hosted.sandbox.enter(hosted.process.pid)
        hosted.started_at = time.monotonic()
        hosted.watcher = asyncio.create_task(self._watch(hosted, hosted.process, hosted.user))
        hosted.user = None  # the watcher removes it when that worker ends
        log.info("worker started", extra={"namespace": record.name, "pid": hosted.process.pid})

    async def _watch(self, hosted: _Hosted, process: asyncio.subprocess.Process, user: str | None) -> None:
        try:
            await self._follow(hosted, process)
        finally:
            if user is not None:  # each start has a user of its own: it ends with its worker
                await self._remove_user(user)

    async def _remove_user(self, user: str) -> None:
        try:
            async with rabbitmq_admin(self.settings, self.cell) as admin:
                await admin.delete_user(user)
        except Exception:
            log.warning("removing a worker's broker user failed", extra={"user": user}, exc_info=True)

    async def _follow(self, hosted: _Hosted, process: asyncio.subprocess.Process) -> None:
        reading = asyncio.create_task(self._relay_output(hosted.record.name, process))
        code = await process.wait()
        # What the worker started may outlive it and hold its output open: its session ends with it
        # (a process tenant code started in a session of its own stays in the namespace's cgroups, under
        # their limits, until the namespace's workers stop: the next worker shares those cgroups).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(reading, OUTPUT_DRAIN_SECONDS)
        except TimeoutError:
            log.warning(
                "the worker's output stayed open after it exited", extra={"namespace": hosted.record.name}
            )
        if self.stopping.is_set() or hosted.process is not process:
            return
        if code == 0:  # it ended itself, idle
            hosted.idle = True
            log.info("worker scaled to zero", extra={"namespace": hosted.record.name})
            return
        lived = time.monotonic() - hosted.started_at
        hosted.restarts = 0 if lived > HEALTHY_AFTER_SECONDS else hosted.restarts + 1
        backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** max(hosted.restarts - 1, 0)) if hosted.restarts else 0.0
        hosted.next_start_at = time.monotonic() + backoff
        log.warning(
            "worker exited; restarting",
            extra={"namespace": hosted.record.name, "code": code, "in_seconds": backoff},
        )

    @staticmethod
    async def _relay_output(namespace: str, process: asyncio.subprocess.Process) -> None:
        """What the worker prints joins this process's log, marked with its namespace, line by line."""
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line longer than the reader's limit: take it in pieces
                raw = await process.stdout.read(64 * 1024)
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()[:2000]
            log.info("worker output", extra={"namespace": namespace, "line": line})

    async def _credential(self, hosted: _Hosted) -> str:
        record = hosted.record
        if record.name == self.settings.system_namespace:
            return namespace_amqp_url(self.settings, self.cell, record.vhost)
        # A user per start: a draining worker keeps its own while the next one starts with another.
        self.starts += 1
        user = f"perdure-worker.{record.name}.{self.token}.{self.starts}"
        password = secrets.token_urlsafe(24)
        async with rabbitmq_admin(self.settings, self.cell) as admin:
            await admin.create_user(user, password)
            await admin.set_permissions(record.vhost, user, **namespace_user_permissions())
        hosted.user = user
        broker = urlsplit(self.settings.endpoints(self.cell).rabbitmq_url)
        host = broker.hostname or "127.0.0.1"
        port = f":{broker.port}" if broker.port else ""
        credential = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"{broker.scheme}://{credential}@{host}{port}/{quote(record.vhost, safe='')}"

    async def _stop(self, hosted: _Hosted, *, forget: bool = False) -> None:
        if hosted.process is not None:
            await self._end(hosted.process, self.stop_grace)
        # Stopping, previous versions get the same grace as the current one, not the whole drain.
        await asyncio.gather(*(self._end(p, self.stop_grace) for p in hosted.previous))
        if hosted.draining:
            await asyncio.gather(*hosted.draining, return_exceptions=True)
        if hosted.sandbox is not None:
            hosted.sandbox.remove()
        if hosted.watcher is not None:
            await asyncio.gather(hosted.watcher, return_exceptions=True)  # it removes the worker's user
        if forget and hosted.sandbox is not None:
            await asyncio.to_thread(hosted.sandbox.forget)  # the namespace is gone: so is its OS user

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.gather(
            *(self._stop(h) for h in self.workers.values()),
            *self._stopping_namespaces,
            return_exceptions=True,
        )
        self.workers.clear()
