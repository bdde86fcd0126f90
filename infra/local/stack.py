"""``perdure stack up | down | status | logs``: the local stack as processes on this machine."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from perdure.infra.local.credentials import stack_settings
from perdure.infra.local.probes import port_in_use
from perdure.infra.local.processes import tail
from perdure.infra.local.services import (
    LocalService,
    PostgresService,
    RabbitMQService,
    StackError,
    all_services,
    progress,
)
from perdure.infra.settings import Settings

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    up: bool
    version: str
    addresses: str
    pid: int | None
    detail: str = ""


class LocalStack:
    def __init__(self, settings: Settings, services: list[LocalService] | None = None) -> None:
        # The stack's services require the platform's logins: made on its first start.
        self.settings = stack_settings(settings)
        self.services = services if services is not None else all_services(self.settings)

    def service(self, name: str) -> LocalService:
        for service in self.services:
            if service.name == name:
                return service
        names = ", ".join(s.name for s in self.services)
        raise StackError(f"unknown service {name!r}; the stack has: {names}")

    def preflight(self) -> None:
        """Refuse to start anything when a tool is missing or a port is held by another program."""
        problems: list[str] = []
        for service in self.services:
            service.check_local()
            problems.extend(f"{service.name}: missing {what}" for what in service.missing_tools())
            if service.process.running():
                continue
            for address in service.addresses:
                if port_in_use(address.host, address.port):
                    problems.append(
                        f"{service.name}: port {address.port} on {address.host} is already held by another "
                        f"program; stop it, or point PERDURE_* settings at a free port"
                    )
        if problems:
            raise StackError("cannot start the local stack:\n  " + "\n  ".join(problems))

    async def _probe(self, service: LocalService) -> str | None:
        try:
            return await service.probe()
        except Exception:
            return None

    async def _wait_ready(self, service: LocalService, deadline: float, *, launched: bool) -> str:
        while True:
            version = await self._probe(service)
            if version is not None:
                return version
            exited = service.process.exited_early()  # asked once: the process may go between two looks
            if exited and not launched:
                # What was running was not one we started but one on its way out (a service killed
                # just before, its process not yet gone): start ours now.
                service.launch()
                launched = True
                continue
            if exited:
                raise StackError(
                    f"{service.name} exited during start-up; last lines of its log:\n"
                    + "\n".join(tail(path, 30) for path in service.log_files())
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{service.name} did not serve on {', '.join(map(str, service.addresses))} within "
                    f"{READY_TIMEOUT_S:.0f}s; last lines of its log:\n"
                    + "\n".join(tail(path, 30) for path in service.log_files())
                )
            await asyncio.sleep(0.25)

    async def up(self) -> list[ServiceStatus]:
        # A warm stack answers its probes at once: skip the slower checks entirely.
        current = await asyncio.gather(*(self._probe(s) for s in self.services))
        pending = [s for s, version in zip(self.services, current, strict=True) if version is None]
        if pending:
            LocalStack(self.settings, pending).preflight()
            for service in pending:
                service.home.mkdir(parents=True, exist_ok=True)
                service.home.chmod(0o700)  # data, configuration with passwords, logs: the owner's alone
                if not service.installed():
                    service.install()
            deadline = time.monotonic() + READY_TIMEOUT_S
            # Storage first: FerretDB needs its PostgreSQL serving before it starts.
            first = [s for s in pending if isinstance(s, PostgresService)]
            for group in (first, [s for s in pending if s not in first]):
                launched = set()
                for service in group:
                    if not service.process.running():
                        progress.info("starting %s", service.name)
                        service.launch()
                        launched.add(service.name)
                await asyncio.gather(
                    *(self._wait_ready(s, deadline, launched=s.name in launched) for s in group)
                )
        return await self.status()

    async def status(self) -> list[ServiceStatus]:
        versions = await asyncio.gather(*(self._probe(s) for s in self.services))
        result = []
        for service, version in zip(self.services, versions, strict=True):
            pid = service.process.pid()
            detail = "" if pid is not None or version is None else "not started by this stack"
            result.append(
                ServiceStatus(
                    name=service.name,
                    up=version is not None,
                    version=version or "-",
                    addresses=", ".join(map(str, service.addresses)),
                    pid=pid,
                    detail=detail,
                )
            )
        return result

    def down(self) -> list[str]:
        stopped = []
        # Reverse order: RabbitMQ before its port mapper, brokers before nothing else depends on them.
        for service in reversed(self.services):
            if service.process.stop():
                stopped.append(service.name)
            if isinstance(service, RabbitMQService):
                service.stop_helpers()
        return stopped

    def logs(self, name: str | None, lines: int) -> str:
        chosen = [self.service(name)] if name else self.services
        parts = []
        for service in chosen:
            for path in service.log_files():
                parts.append(f"==> {service.name}: {path} <==\n{tail(path, lines)}")
        return "\n\n".join(parts)
