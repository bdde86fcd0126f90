"""The audit log: who did what to which namespace or run, and whether it was allowed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

Outcome = Literal["done", "refused", "failed"]


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    actor: str  # account/email or operator/email
    account: str | None
    namespace: str | None
    action: str  # e.g. "workflow.terminate", "namespace.rotate-key", "signin"
    target: str | None  # a workflow id, a dead letter id, ...
    outcome: Outcome
    detail: str = ""
    source: str = "console"


class AuditLog:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.entries = database["audit_log"]

    async def ensure_indexes(self) -> None:
        await self.entries.create_index([("account", ASCENDING), ("at", DESCENDING)])
        await self.entries.create_index([("namespace", ASCENDING), ("at", DESCENDING)])

    async def record(
        self,
        *,
        actor: str,
        account: str | None,
        action: str,
        outcome: Outcome,
        namespace: str | None = None,
        target: str | None = None,
        detail: str = "",
    ) -> AuditEntry:
        entry = AuditEntry(
            at=datetime.now(UTC),
            actor=actor,
            account=account,
            namespace=namespace,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail[:2000],
        )
        await self.entries.insert_one(entry.model_dump())
        return entry

    async def recent(
        self, *, account: str | None = None, namespace: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        query: dict[str, Any] = {}
        if account is not None:
            query["account"] = account
        if namespace is not None:
            query["namespace"] = namespace
        cursor = self.entries.find(query, {"_id": 0}).sort("at", DESCENDING).limit(limit)
        return [AuditEntry.model_validate(d) async for d in cursor]
