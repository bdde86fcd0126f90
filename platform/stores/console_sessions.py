"""Console sessions and failed sign-ins, kept in the control database so that any console process
serves any session and signing out ends a session everywhere (a signed cookie alone could not be
taken back)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from perdure.platform.stores.console_identity import Identity

SESSION_LIFETIME = timedelta(hours=8)
# Sign-in: this many failures inside the window, then each further attempt waits out a lock that
# doubles with every failure (30 s, 60 s, ... capped).
FREE_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
FIRST_LOCK = timedelta(seconds=30)
LONGEST_LOCK = timedelta(minutes=15)
# Each round of a reservation is won by one of the attempts racing it, and FREE_FAILURES wins lock the
# others out: more rounds than that are lost only to a crowd.
_RESERVE_ROUNDS = 4 * FREE_FAILURES


@dataclass(frozen=True)
class SigninAttempt:
    number: int  # of the attempts in the window, this one (counting those reserved before it only)
    wait: timedelta | None  # set: refused, to try again after this long

    @property
    def lock_if_failed(self) -> timedelta | None:
        """The lock this attempt earns if its password is wrong (None while within the free failures)."""
        return _lock(self.number) if self.number >= FREE_FAILURES else None


@dataclass(frozen=True)
class ConsoleSession:
    id: str
    identity: Identity
    csrf_token: str
    expires_at: datetime


class ConsoleSessions:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.sessions = database["console_sessions"]
        self.failures = database["console_signin_attempts"]
        self.secrets = database["console_secrets"]

    async def ensure_indexes(self) -> None:
        await self.sessions.create_index([("identity_key", ASCENDING)])
        await self.sessions.create_index([("expires_at", ASCENDING)])
        await self.failures.create_index([("email", ASCENDING), ("number", DESCENDING)])

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
    async def reserve_attempt(self, email: str, now: datetime | None = None) -> SigninAttempt:
        """Count a sign-in attempt of ``email`` before its password is checked, so that parallel guesses
        cannot all pass one check: the attempt says how long it must wait instead (it is then not
        counted), or that it may go on, and which attempt of the window it is. Attempts are forgotten
        on success (``clear_failures``), so what counts are the failures of the window.

        Each attempt takes the next number of its e-mail by inserting a document whose ``_id`` holds
        that number: a unique key is the one thing every MongoDB-protocol server keeps atomic under
        concurrency (findAndModify is not on all of them), so of two attempts that read the same last
        number one inserts and the other reads again."""
        now = _to_millisecond(now or datetime.now(UTC))  # as the database keeps it
        key = email.lower()
        for _ in range(_RESERVE_ROUNDS):
            recorded = [d async for d in self.failures.find({"email": key}).sort("number", DESCENDING)]
            before = [d["at"] for d in recorded if d["at"] > now - FAILURE_WINDOW]
            if len(before) >= FREE_FAILURES:
                unlocked_at = max(before) + _lock(len(before))
                if unlocked_at > now:
                    return SigninAttempt(len(before) + 1, unlocked_at - now)
            number = recorded[0]["number"] + 1 if recorded else 1
            try:
                await self.failures.insert_one(
                    {"_id": f"{key}|{number}", "email": key, "number": number, "at": now}
                )
            except DuplicateKeyError:
                continue  # another attempt took this number: count again, with it
            if len(recorded) > len(before):  # attempts out of the window no longer count
                await self.failures.delete_many({"email": key, "at": {"$lte": now - FAILURE_WINDOW}})
            return SigninAttempt(len(before) + 1, None)
        # Every round lost to another attempt: a crowd of them is guessing, so this one waits.
        return SigninAttempt(FREE_FAILURES + 1, FIRST_LOCK)

    async def clear_failures(self, email: str) -> None:
        await self.failures.delete_many({"email": email.lower()})


def _to_millisecond(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _lock(failures: int) -> timedelta:
    """The lock after ``failures`` failures in the window (at least FREE_FAILURES)."""
    doubled: timedelta = FIRST_LOCK * 2 ** (failures - FREE_FAILURES)
    return min(doubled, LONGEST_LOCK)
