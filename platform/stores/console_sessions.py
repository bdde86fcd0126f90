"""Console sessions and failed sign-ins, kept in the control database so that any console process
serves any session and signing out ends a session everywhere (a signed cookie alone could not be
taken back)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from perdure.platform.stores.console_credentials import Identity

SESSION_LIFETIME = timedelta(hours=8)
# Sign-in: this many failures inside the window, then each further attempt waits out a lock that
# doubles with every failure (30 s, 60 s, ... capped).
FREE_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
FIRST_LOCK = timedelta(seconds=30)
LONGEST_LOCK = timedelta(minutes=15)


@dataclass(frozen=True)
class ConsoleSession:
    id: str
    identity: Identity
    csrf_token: str
    expires_at: datetime


class ConsoleSessions:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.sessions = database["console_sessions"]
        self.failures = database["console_signin_failures"]
        self.secrets = database["console_secrets"]

    async def ensure_indexes(self) -> None:
        await self.sessions.create_index([("identity_key", ASCENDING)])
        await self.sessions.create_index([("expires_at", ASCENDING)])

    async def cookie_secret(self) -> str:
        """The key cookies are signed with, made once and shared by every console process."""
        document = await self.secrets.find_one_and_update(
            {"_id": "cookie"},
            {"$setOnInsert": {"value": secrets.token_urlsafe(48), "created_at": datetime.now(UTC)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert document is not None
        return str(document["value"])

    async def open(self, identity: Identity, now: datetime | None = None) -> ConsoleSession:
        now = now or datetime.now(UTC)
        session = ConsoleSession(
            id=secrets.token_urlsafe(32),
            identity=identity,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now + SESSION_LIFETIME,
        )
        await self.sessions.insert_one(
            {
                "_id": session.id,
                "identity": identity.model_dump(),
                "identity_key": identity.key,
                "csrf_token": session.csrf_token,
                "created_at": now,
                "expires_at": session.expires_at,
            }
        )
        await self.sessions.delete_many({"expires_at": {"$lt": now}})
        return session

    async def find(self, session_id: str, now: datetime | None = None) -> ConsoleSession | None:
        """The live session of that id; None when it never was, was closed or has expired."""
        document = await self.sessions.find_one({"_id": session_id})
        if document is None:
            return None
        if document["expires_at"] <= (now or datetime.now(UTC)):
            await self.sessions.delete_one({"_id": session_id})
            return None
        return ConsoleSession(
            id=session_id,
            identity=Identity.model_validate(document["identity"]),
            csrf_token=document["csrf_token"],
            expires_at=document["expires_at"],
        )

    async def close(self, session_id: str) -> None:
        await self.sessions.delete_one({"_id": session_id})

    async def close_all_of(self, identity: Identity) -> int:
        result = await self.sessions.delete_many({"identity_key": identity.key})
        return result.deleted_count

    # -- sign-in throttling --------------------------------------------------------------------------
    async def locked_for(self, email: str, now: datetime | None = None) -> timedelta | None:
        """How long sign-in of ``email`` must still wait, or None when it may try now."""
        now = now or datetime.now(UTC)
        document = await self.failures.find_one({"_id": email.lower()})
        if document is None or document.get("locked_until") is None:
            return None
        left: timedelta = document["locked_until"] - now
        return left if left > timedelta(0) else None

    async def record_failure(self, email: str, now: datetime | None = None) -> timedelta | None:
        """Count a failed sign-in; returns the lock it earned (None while still inside the free ones)."""
        now = now or datetime.now(UTC)
        key = email.lower()
        document = await self.failures.find_one({"_id": key})
        recent = [t for t in (document or {}).get("times", []) if t > now - FAILURE_WINDOW]
        recent.append(now)
        lock: timedelta | None = None
        if len(recent) >= FREE_FAILURES:
            lock = min(FIRST_LOCK * 2 ** (len(recent) - FREE_FAILURES), LONGEST_LOCK)
        await self.failures.update_one(
            {"_id": key},
            {"$set": {"times": recent[-4 * FREE_FAILURES :], "locked_until": now + lock if lock else None}},
            upsert=True,
        )
        return lock

    async def clear_failures(self, email: str) -> None:
        await self.failures.delete_one({"_id": email.lower()})
