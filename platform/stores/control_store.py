"""The control database's records of cells and namespaces (``<prefix>_control``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from perdure.platform.core.search_attribute_registry import check_registration
from perdure.platform.core.visibility_query import AttributeType
from perdure.platform.protocol.cell_wire import dlq_topic, tasks_topic
from perdure.platform.stores.artifacts import Deployment
from perdure.platform.tenancy.model import Member, Quota

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class ControlError(ValueError):
    pass


def check_name(kind: str, name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ControlError(
            f"{kind} name {name!r} must be lowercase letters, digits and '-', starting with a letter"
        )
    return name


class CellRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    partitions: int = Field(ge=1, le=1024)
    topic: str
    dlq_topic: str
    database: str
    created_at: datetime
    # What placement weighs: the actions per second the cell is sized for, and whether it may take
    # new namespaces at all.
    capacity: float = Field(default=1_000.0, ge=0)
    healthy: bool = True
    # The platform version the cell's processes are to run (set by rollouts; None: whatever they run).
    desired_version: str | None = None

    @classmethod
    def new(cls, name: str, partitions: int, database: str, capacity: float = 1_000.0) -> CellRecord:
        return cls(
            name=check_name("cell", name),
            partitions=partitions,
            topic=tasks_topic(name),
            dlq_topic=dlq_topic(name),
            database=database,
            created_at=datetime.now(UTC),
            capacity=capacity,
        )


class ProcessReport(BaseModel):
    """What a cell process says of itself every few seconds (rollouts wait and gate on it)."""

    model_config = ConfigDict(frozen=True)

    process: str  # "<cell>/<host>:<pid>"
    cell: str
    version: str
    healthy: bool
    error_rate: float  # of its recent engine batches
    lag: int  # records behind in its partitions
    reported_at: datetime
    unreachable: list[str] = []  # dependencies in an outage as the process sees it (perdure.infra.outages)
    # Namespaces being moved away whose records its engine holds (a move waits for every process).
    holding: list[str] = []

    def verdict(self, now: datetime, within: timedelta) -> tuple[bool, str]:
        """Whether this report says its process is healthy now (fresh, and healthy when it was made),
        and why not: what `perdure cell probe` and the console's cells page answer."""
        age = (now - self.reported_at).total_seconds()
        if age > within.total_seconds():
            return False, f"{self.process} last reported {age:.0f} s ago"
        if not self.healthy:
            causes = [f"cannot reach {', '.join(self.unreachable)}"] if self.unreachable else []
            causes.append(f"error rate {self.error_rate:.0%}")
            return False, f"{self.process} unhealthy ({'; '.join(causes)})"
        return True, f"{self.process} healthy, reported {age:.0f} s ago"


# Who runs a namespace's workers: the cell's supervisor (platform), or the tenant on its own machines.
Hosting = Literal["platform", "tenant"]


class NamespaceRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    app: str
    cell: str
    vhost: str
    created_at: datetime
    account: str | None = None  # None for a namespace ops made for the platform itself
    quota: Quota = Field(default_factory=Quota)
    retention_days: int = Field(default=30, ge=1)
    # The namespace's RabbitMQ user; its password is the API key, of which only the hash is kept.
    rabbitmq_user: str | None = None
    api_key_id: str | None = None
    api_key_hash: str | None = None
    # provisioning: its infrastructure is being made; validating: made, and served for the canary;
    # active; suspended: new work refused; moving: being handed to another cell (``moving_to``), its
    # requests and records held meanwhile; deleted: unreachable, its data kept for its retention.
    status: Literal["provisioning", "validating", "active", "suspended", "moving", "deleted"] = "active"
    moving_to: str | None = None
    # The status to go back to once a move is over (active or suspended).
    status_before_move: Literal["active", "suspended"] | None = None
    deleted_at: datetime | None = None
    # The account's people and what they may do in this namespace, as of its creation.
    members: list[Member] = Field(default_factory=list)
    # The workflow types its app registers (read in a separate process when the app is deployed); a
    # start of another type is refused at admission. Empty: not known, every type is admitted.
    workflow_types: list[str] = Field(default_factory=list)
    hosting: Hosting = "platform"
    # The app as last deployed (``perdure namespace deploy``); without one, ``app`` is imported by path.
    deployment: Deployment | None = None
    # The search attributes its visibility queries may name, with their types (each indexed in its cell).
    search_attributes: dict[str, AttributeType] = Field(default_factory=dict)


class ControlStore:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = database
        self.cells = database["cells"]
        self.namespaces = database["namespaces"]
        self.processes = database["cell_processes"]

    async def ensure_indexes(self) -> None:
        await self.namespaces.create_index([("cell", ASCENDING)])
        await self.namespaces.create_index([("account", ASCENDING)])

    async def add_cell(self, cell: CellRecord) -> CellRecord:
        """Register a cell; registering the same cell again is a no-op, a different one an error."""
        document = {"_id": cell.name, **cell.model_dump(mode="python")}
        try:
            await self.cells.insert_one(document)
            return cell
        except DuplicateKeyError:
            existing = await self.get_cell(cell.name)
            if existing.partitions != cell.partitions:
                raise ControlError(
                    f"cell {cell.name!r} exists with {existing.partitions} partitions, not {cell.partitions}"
                ) from None
            return existing

    async def get_cell(self, name: str) -> CellRecord:
        document = await self.cells.find_one({"_id": name})
        if document is None:
            raise ControlError(
                f"no cell {name!r}; create it with `perdure cell create {name} --partitions N`"
            )
        return CellRecord.model_validate(document)

    async def report_process(self, report: ProcessReport) -> None:
        await self.processes.replace_one(
            {"_id": report.process}, report.model_dump(mode="python"), upsert=True
        )

    async def processes_of(self, cell: str, fresher_than: datetime) -> list[ProcessReport]:
        cursor = self.processes.find({"cell": cell, "reported_at": {"$gte": fresher_than}})
        return [ProcessReport.model_validate(d) async for d in cursor]

    async def update_cell(self, name: str, **changes: Any) -> CellRecord:
        current = await self.get_cell(name)
        updated = CellRecord.model_validate({**current.model_dump(), **changes})
        await self.cells.update_one({"_id": name}, {"$set": updated.model_dump(mode="python")})
        return updated

    async def list_cells(self) -> list[CellRecord]:
        return [CellRecord.model_validate(d) async for d in self.cells.find().sort("_id", ASCENDING)]

    async def add_namespace(self, namespace: NamespaceRecord) -> NamespaceRecord:
        document = {"_id": namespace.name, **namespace.model_dump(mode="python")}
        try:
            await self.namespaces.insert_one(document)
            return namespace
        except DuplicateKeyError:
            existing = await self.get_namespace(namespace.name)
            if (existing.app, existing.cell) != (namespace.app, namespace.cell):
                raise ControlError(
                    f"namespace {namespace.name!r} exists on cell {existing.cell!r} with app {existing.app!r}"
                ) from None
            return existing

    async def get_namespace(self, name: str) -> NamespaceRecord:
        document = await self.namespaces.find_one({"_id": name})
        if document is None:
            raise ControlError(f"no namespace {name!r}")
        return NamespaceRecord.model_validate(document)

    async def delete_namespace(self, name: str) -> None:
        await self.namespaces.delete_one({"_id": name})

    async def list_namespaces(self, account: str | None = None) -> list[NamespaceRecord]:
        query = {} if account is None else {"account": account}
        cursor = self.namespaces.find(query).sort("_id", ASCENDING)
        return [NamespaceRecord.model_validate(d) async for d in cursor]

    async def update_namespace(self, name: str, **changes: Any) -> NamespaceRecord:
        current = await self.get_namespace(name)
        updated = NamespaceRecord.model_validate({**current.model_dump(), **changes})
        # Only the fields changed: a concurrent change of others (a move, a quota) is not undone.
        fields = updated.model_dump(mode="python", include=set(changes))
        await self.namespaces.update_one({"_id": name}, {"$set": fields})
        return updated

    async def update_namespace_if(
        self, name: str, expected: dict[str, Any], **changes: Any
    ) -> NamespaceRecord | None:
        """Change ``name`` only while its fields still hold ``expected`` (a move's steps: each goes
        from the state the previous one left); the record after, or None if it was not as expected."""
        current = await self.get_namespace(name)
        updated = NamespaceRecord.model_validate({**current.model_dump(), **changes})
        fields = updated.model_dump(mode="python", include=set(changes))
        result = await self.namespaces.update_one({"_id": name, **expected}, {"$set": fields})
        return updated if result.matched_count else None

    async def search_attributes_of(self, namespace: str) -> dict[str, AttributeType]:
        """The search attributes ``namespace`` registered, with their types (read afresh each time)."""
        document = await self.namespaces.find_one({"_id": namespace}, {"search_attributes": 1})
        if document is None:
            raise ControlError(f"no namespace {namespace!r}")
        return dict(document.get("search_attributes") or {})

    async def add_search_attribute(self, namespace: str, name: str, kind: AttributeType) -> bool:
        """Register a search attribute (False: it was, with this type); raises ``RegistrationError`` for
        a name or type that cannot be, or one registered with another type."""
        if not check_registration(await self.search_attributes_of(namespace), name, kind):
            return False
        # Set only while unset: of two concurrent registrations of one name, the second sees the first.
        result = await self.namespaces.update_one(
            {"_id": namespace, f"search_attributes.{name}": {"$exists": False}},
            {"$set": {f"search_attributes.{name}": kind}},
        )
        if not result.modified_count:
            check_registration(await self.search_attributes_of(namespace), name, kind)
            return False
        return True

    async def namespaces_of(self, cell: str) -> list[NamespaceRecord]:
        cursor = self.namespaces.find({"cell": cell}).sort("_id", ASCENDING)
        return [NamespaceRecord.model_validate(d) async for d in cursor]
