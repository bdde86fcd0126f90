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

from perdure.infra.settings import Settings
from perdure.platform.cell.connections import rabbitmq_admin
from perdure.platform.cell.control_store import NamespaceRecord
from perdure.platform.cell.namespace_apps import NamespaceApps
from perdure.platform.cell.provisioning import namespace_amqp_url
from perdure.platform.tenancy.vhost_layout import namespace_user_permissions
from perdure.platform.workers.sandbox import Sandbox, SandboxLimits, die_with, sweep_cgroups

log = logging.getLogger("perdure.workers")
STOP_GRACE_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0


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


class WorkerSupervisor:
    def __init__(
        self,
        settings: Settings,
        cell: str,
        apps: NamespaceApps,
        *,
        refresh_seconds: float = 2.0,
    ) -> None:
        self.settings = settings
        self.cell = cell
        self.apps = apps
        self.refresh_seconds = refresh_seconds
        self.token = secrets.token_hex(6)
        self.stopping = asyncio.Event()
        self.workers: dict[str, _Hosted] = {}

    def pid_of(self, namespace: str) -> int | None:
        hosted = self.workers.get(namespace)
        return hosted.process.pid if hosted and hosted.process and hosted.process.returncode is None else None

    async def run(self) -> None:
        if os.geteuid() == 0:
            await asyncio.to_thread(sweep_cgroups)
        while not self.stopping.is_set():
            try:
                await self._refresh()
            except Exception:
                log.exception("refreshing the namespaces' workers failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.refresh_seconds)

    async def _refresh(self) -> None:
        records = {r.name: r for r in await self.apps.all() if r.hosting == "platform"}
        for gone in self.workers.keys() - records.keys():
            await self._stop(self.workers.pop(gone))
            log.info("worker stopped: its namespace is gone", extra={"namespace": gone})
        now = time.monotonic()
        for name, record in records.items():
            hosted = self.workers.setdefault(name, _Hosted(record))
            hosted.record = record
            running = hosted.process is not None and hosted.process.returncode is None
            if not running and now >= hosted.next_start_at:
                await self._start(hosted)

    async def _start(self, hosted: _Hosted) -> None:
        record = hosted.record
        connection = await self._credential(hosted)
        given = {
            "PERDURE_CONNECTION": connection,
            "PERDURE_APP": record.app,
            "PERDURE_MAX_CONCURRENT_ACTIVITIES": str(record.quota.max_concurrent_activities),
            "PERDURE_ACTIVITIES_PER_SECOND": str(record.quota.actions_per_second),
            "PERDURE_ACTIVITY_BURST": str(record.quota.burst),
        }
        module = ["-m", "perdure.platform.workers.hosted_worker"]
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
            hosted.sandbox = hosted.sandbox or Sandbox(
                self.settings.stack_dir / "workers",
                record.name,
                SandboxLimits(
                    memory_bytes=record.quota.worker_memory_mb * 1024 * 1024, cpus=record.quota.worker_cpus
                ),
                self.token,
            )
            options = await asyncio.to_thread(hosted.sandbox.prepare)
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
        hosted.watcher = asyncio.create_task(self._watch(hosted, hosted.process))
        log.info("worker started", extra={"namespace": record.name, "pid": hosted.process.pid})

    async def _watch(self, hosted: _Hosted, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        # What the worker prints joins this process's log, marked with its namespace, line by line.
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line longer than the reader's limit: take it in pieces
                raw = await process.stdout.read(64 * 1024)
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip()[:2000]
            log.info("worker output", extra={"namespace": hosted.record.name, "line": line})
        code = await process.wait()
        if self.stopping.is_set() or hosted.process is not process:
            return
        lived = time.monotonic() - hosted.started_at
        hosted.restarts = 0 if lived > HEALTHY_AFTER_SECONDS else hosted.restarts + 1
        backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** max(hosted.restarts - 1, 0)) if hosted.restarts else 0.0
        hosted.next_start_at = time.monotonic() + backoff
        log.warning(
            "worker exited; restarting",
            extra={"namespace": hosted.record.name, "code": code, "in_seconds": backoff},
        )

    async def _credential(self, hosted: _Hosted) -> str:
        record = hosted.record
        if record.name == self.settings.system_namespace:
            return namespace_amqp_url(self.settings, self.cell, record.vhost)
        user = f"perdure-worker.{record.name}.{self.token}"
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

    async def _stop(self, hosted: _Hosted) -> None:
        process = hosted.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the worker and whatever it started
                await process.wait()
        if hosted.sandbox is not None:
            hosted.sandbox.remove()
        if hosted.watcher is not None:
            hosted.watcher.cancel()
        if hosted.user is not None:
            try:
                async with rabbitmq_admin(self.settings, self.cell) as admin:
                    await admin.delete_user(hosted.user)
            except Exception:
                log.warning("removing a worker's broker user failed", exc_info=True)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.gather(*(self._stop(h) for h in self.workers.values()), return_exceptions=True)
        self.workers.clear()
