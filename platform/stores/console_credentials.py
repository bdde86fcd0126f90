"""Passwords of the people who sign in to the console: account users and platform operators.

Passwords are kept only as argon2id hashes (argon2-cffi's defaults, re-hashed when those change).
Operators are kept apart from account users: no account user holds the operator role, and an
operator belongs to no account. Setting a password ends every session of its identity (a reset after a
suspected compromise must evict whoever held one). Verifying runs in a worker thread, a few at a time:
argon2 costs ~0.2 s of CPU by design, which on the event loop would stall every page of the console.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from perdure.platform.stores.console_identity import OPERATOR, Identity
from perdure.platform.stores.console_sessions import ConsoleSessions
from perdure.platform.stores.control_store import ControlError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is an attack on the CPU

_hasher = PasswordHasher()
# Verified when the e-mail is unknown, so that a missing user costs as long as a wrong password.
_DECOY_HASH = _hasher.hash("not a password of anyone")
# Verifications at once (each holds a core for ~0.2 s); more wait their turn.
_verifying = asyncio.Semaphore(2)


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ControlError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ControlError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    return password


class ConsoleCredentials:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.users = database["users"]
        self.operators = database["operators"]
        self._sessions = ConsoleSessions(database)

    async def ensure_indexes(self) -> None:
        await self.users.create_index([("email_lower", ASCENDING)])

    async def set_user_password(self, account: str, email: str, password: str) -> None:
        user_id = f"{account}/{email.lower()}"
        result = await self.users.update_one(
            {"_id": user_id},
            {
                "$set": {
                    "password_hash": _hasher.hash(check_password(password)),
                    "email_lower": email.lower(),
                    "password_set_at": datetime.now(UTC),
                }
            },
        )
        if result.matched_count != 1:
            raise ControlError(f"no user {email} in account {account!r}")
        user = await self.users.find_one({"_id": user_id})
        assert user is not None
        await self._sessions.close_all_of(Identity(email=user["email"], account=account, role=user["role"]))

    async def issue_password(self, account: str, email: str) -> str:
        """Give an existing user a new random password and return it (for a demo or a first sign-in)."""
        password = secrets.token_urlsafe(12)
        await self.set_user_password(account, email, password)
        return password

    async def add_operator(self, email: str, password: str) -> Identity:
        identity = Identity(email=email, account=None, role=OPERATOR)
        await self.operators.update_one(
            {"_id": identity.email.lower()},
            {
                "$set": {
                    "email": identity.email,
                    "password_hash": _hasher.hash(check_password(password)),
                    "password_set_at": datetime.now(UTC),
                },
                "$setOnInsert": {"created_at": datetime.now(UTC)},
            },
            upsert=True,
        )
        await self._sessions.close_all_of(identity)
        return identity

    async def identities_of(self, email: str) -> list[tuple[Identity, str]]:
        """Every identity the e-mail has (one per account, and operator), with its password hash."""
        found: list[tuple[Identity, str]] = []
        async for user in self.users.find({"email_lower": email.lower(), "password_hash": {"$exists": True}}):
            identity = Identity(email=user["email"], account=user["account"], role=user["role"])
            found.append((identity, user["password_hash"]))
        operator = await self.operators.find_one({"_id": email.lower()})
        if operator is not None:
            found.append(
                (Identity(email=operator["email"], account=None, role=OPERATOR), operator["password_hash"])
            )
        return found

    async def verify(self, email: str, password: str, account: str | None = None) -> list[Identity]:
        """The identities of ``email`` whose password is ``password`` (narrowed to ``account`` when
        given; "operator" names the operator identity). Empty when none matches."""
        if len(password) > MAX_PASSWORD_LENGTH:
            return []
        candidates = await self.identities_of(email)
        if account:
            candidates = [(i, h) for i, h in candidates if (i.account or OPERATOR) == account]
        if not candidates:
            await _verified(_DECOY_HASH, password)
            return []
        return [identity for identity, hashed in candidates if await _verified(hashed, password)]

    async def current(self, identity: Identity) -> Identity | None:
        """The identity as it stands now (its role may have changed, or it may be gone)."""
        if identity.is_operator:
            found = await self.operators.find_one({"_id": identity.email.lower()})
            return identity if found is not None else None
        user = await self.users.find_one({"_id": identity.key})
        if user is None or "password_hash" not in user:
            return None
        return Identity(email=user["email"], account=user["account"], role=user["role"])


async def _verified(hashed: str, password: str) -> bool:
    async with _verifying:
        return await asyncio.to_thread(_verify, hashed, password)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
