"""A cell process's part in rollouts: every few seconds it reports itself (version, health, error rate,
lag) to the control store, and when the cell's desired version differs from the one it runs, it
restarts its engine gracefully and runs that version from then on."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import UTC, datetime

from perdure.infra.outages import OUTAGES
from perdure.platform.cell.engine import total_lag
from perdure.platform.cell.engine_runner import EngineRunner
from perdure.platform.stores.control_store import ControlStore, ProcessReport
from perdure.platform.stores.namespace_apps import NamespaceApps

log = logging.getLogger("perdure.cell")
REPORT_EVERY = 2.0
UNHEALTHY_ERROR_RATE = 0.5


class ProcessReporter:
    def __init__(
        self, control: ControlStore, cell: str, runner: EngineRunner, version: str, apps: NamespaceApps
    ) -> None:
        self.apps = apps
        self.control = control
        self.cell = cell
        self.runner = runner
        self.version = version
        self.process = f"{cell}/{socket.gethostname()}:{os.getpid()}"

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self._adopt_desired_version()
                await self.report()
            except Exception as exc:  # a dependency's outage is told once
                OUTAGES.failed("reporting the process or following the desired version", exc)
            try:
                await asyncio.wait_for(stopping.wait(), REPORT_EVERY)
            except TimeoutError:
                pass

    async def _adopt_desired_version(self) -> None:
        desired = (await self.control.get_cell(self.cell)).desired_version
        if desired is not None and desired != self.version:
            log.info("adopting the desired version", extra={"from": self.version, "to": desired})
            await self.runner.restart()
            self.version = desired

    async def report(self) -> None:
        error_rate = self.runner.error_rate()
        unreachable = OUTAGES.unreachable()
        await self.control.report_process(
            ProcessReport(
                process=self.process,
                cell=self.cell,
                version=self.version,
                healthy=self.runner.alive() and error_rate < UNHEALTHY_ERROR_RATE and not unreachable,
                error_rate=error_rate,
                lag=total_lag(),
                reported_at=datetime.now(UTC),
                unreachable=unreachable,
                holding=self.apps.holding(),
            )
        )
