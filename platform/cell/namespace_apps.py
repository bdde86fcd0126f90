"""The namespaces of a cell and their apps, loaded once by import path and kept."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from perdure.platform.cell.app_loader import AppLoadError, load_app
from perdure.platform.cell.control_store import ControlError, ControlStore, NamespaceRecord
from perdure.platform.control.canary import WithCanary
from perdure.platform.core.state_machine import ExecutionStateMachine


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LoadedNamespace:
    record: NamespaceRecord
    machine: ExecutionStateMachine


class NamespaceUnavailable(LookupError):
    """No such namespace on this cell, or its app does not load: its messages are dead-lettered."""


class NamespaceApps:
    def __init__(self, control: ControlStore, cell: str) -> None:
        self.control = control
        self.cell = cell
        self._loaded: dict[str, LoadedNamespace] = {}

    async def get(self, namespace: str) -> LoadedNamespace:
        loaded = self._loaded.get(namespace)
        if loaded is not None:
            return loaded
        try:
            record = await self.control.get_namespace(namespace)
        except ControlError as exc:
            raise NamespaceUnavailable(str(exc)) from None
        if record.cell != self.cell:
            raise NamespaceUnavailable(
                f"namespace {namespace!r} lives on cell {record.cell!r}, not {self.cell!r}"
            )
        try:
            app = WithCanary(load_app(record.app))
        except AppLoadError as exc:
            raise NamespaceUnavailable(str(exc)) from None
        machine = ExecutionStateMachine(app, clock=utc_now, new_id=lambda: str(uuid.uuid4()))
        loaded = LoadedNamespace(record, machine)
        self._loaded[namespace] = loaded
        return loaded

    def vhost_of(self, namespace: str) -> str:
        return self._loaded[namespace].record.vhost if namespace in self._loaded else namespace

    async def all(self) -> list[NamespaceRecord]:
        """The namespaces to serve: all but those whose infrastructure is still being made, and those
        deleted."""
        return [
            n
            for n in await self.control.namespaces_of(self.cell)
            if n.status not in ("provisioning", "deleted")
        ]
