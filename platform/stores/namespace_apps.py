"""The namespaces a cell serves, by name: their records (vhost, quota, status), looked up once and kept.

The cell never imports a namespace's code: workflow and activity tasks go to its workers."""

from __future__ import annotations

from dataclasses import dataclass

from perdure.platform.stores.control_store import ControlError, ControlStore, NamespaceRecord


@dataclass
class LoadedNamespace:
    record: NamespaceRecord


class NamespaceUnavailable(LookupError):
    """No such namespace on this cell: its messages are dead-lettered."""


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
        loaded = LoadedNamespace(record)
        self._loaded[namespace] = loaded
        return loaded

    def loaded(self, namespace: str) -> NamespaceRecord | None:
        """The record of a namespace looked up before, if it was."""
        loaded = self._loaded.get(namespace)
        return loaded.record if loaded is not None else None

    def namespace_of_vhost(self, vhost: str) -> str:
        for loaded in self._loaded.values():
            if loaded.record.vhost == vhost:
                return loaded.record.name
        return vhost

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
