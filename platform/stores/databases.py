"""The database clients a platform process holds: the control database, and a cell's database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from perdure.infra.settings import Settings
from perdure.platform.stores.control_store import ControlStore
from perdure.platform.stores.run_store import RunStore


@dataclass
class Databases:
    client: AsyncMongoClient[dict[str, Any]]
    control: ControlStore

    @property
    def control_db(self) -> AsyncDatabase[dict[str, Any]]:
        return self.control.db

    @classmethod
    def connect(cls, settings: Settings, cell: str | None = None) -> Databases:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.endpoints(cell).mongodb_uri,
            serverSelectionTimeoutMS=10_000,
            tz_aware=True,
            # FerretDB (the local stack's MongoDB) serves many concurrent requests no faster than a few,
            # holding a backend connection for each; a small pool avoids a pile-up that only waits.
            maxPoolSize=16,
        )
        return cls(client, ControlStore(client[settings.control_database]))

    def runs(self, settings: Settings, cell: str) -> RunStore:
        return RunStore(self.client[settings.cell_database(cell)])

    async def close(self) -> None:
        await self.client.close()
