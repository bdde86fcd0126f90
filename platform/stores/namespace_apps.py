"""The namespaces a cell serves, by name: their records (vhost, quota, status), looked up once and kept
up to date by ``refresh`` (a process calls it every few seconds).

The cell never imports a namespace's code: workflow and activity tasks go to its workers."""

from __future__ import annotations

from dataclasses import dataclass, field

from perdure.platform.stores.control_store import ControlError, ControlStore, NamespaceRecord

# Made but not yet served (provisioning), or no longer reachable (deleted).
_NOT_SERVED = ("provisioning", "deleted")


@dataclass
class LoadedNamespace:
    record: NamespaceRecord


class NamespaceUnavailable(LookupError):
    """No such namespace on this cell: its messages are dead-lettered."""


class NamespaceMoved(NamespaceUnavailable):
    """The namespace lives on another cell now: its messages go there."""

    def __init__(self, message: str, cell: str) -> None:
        super().__init__(message)
        self.cell = cell


@dataclass(frozen=True)
class NamespaceChanges:
    """What a refresh found: namespaces this cell serves now and did not before, and those it no
    longer serves (moved away, deleted)."""

    arrived: frozenset[str] = field(default_factory=frozenset)
    departed: frozenset[str] = field(default_factory=frozenset)


class NamespaceApps:
    def __init__(self, control: ControlStore, cell: str) -> None:
        self.control = control
        self.cell = cell
        self._loaded: dict[str, LoadedNamespace] = {}
        self._served: set[str] | None = None  # as of the last refresh (None: none yet)
        self._moving: list[str] = []  # as of the last refresh

    async def get(self, namespace: str) -> LoadedNamespace:
        loaded = self._loaded.get(namespace)
        if loaded is not None:
            return loaded
        try:
            record = await self.control.get_namespace(namespace)
        except ControlError as exc:
            raise NamespaceUnavailable(str(exc)) from None
        if record.cell != self.cell:
            raise NamespaceMoved(
                f"namespace {namespace!r} lives on cell {record.cell!r}, not {self.cell!r}", record.cell
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

    def holding(self) -> list[str]:
        """The namespaces being moved away, as of the last refresh: the engine holds their records
        rather than applies them (it looks each namespace up afresh unless the refresh updated it)."""
        return list(self._moving)

    async def all(self) -> list[NamespaceRecord]:
        """The namespaces whose workers and storage this cell keeps: all but those whose infrastructure
        is still being made, and those deleted (a namespace being moved away is still kept)."""
        return [n for n in await self.control.namespaces_of(self.cell) if n.status not in _NOT_SERVED]

    async def serving(self) -> list[NamespaceRecord]:
        """The namespaces whose requests and reports this cell takes in: not those being moved."""
        return [n for n in await self.all() if n.status != "moving"]

    async def refresh(self) -> NamespaceChanges:
        """Take the records as they are now: a changed one (quota, status) replaces the kept one, and
        a namespace gone from this cell is forgotten (its next lookup finds where it went)."""
        records = {r.name: r for r in await self.all()}
        for name in list(self._loaded):
            if name in records:
                self._loaded[name] = LoadedNamespace(records[name])
            else:
                del self._loaded[name]
        served = {name for name, record in records.items() if record.status != "moving"}
        self._moving = sorted(records.keys() - served)
        before, self._served = self._served, served
        if before is None:
            # The first look: nothing moved here yet (taking a partition arms all its runs' timers).
            return NamespaceChanges()
        return NamespaceChanges(arrived=frozenset(served - before), departed=frozenset(before - served))
