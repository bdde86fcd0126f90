"""Accounts and users in the control database (namespaces live beside them, in the control store)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from perdure.platform.stores.control_store import ControlError, check_name
from perdure.platform.tenancy.model import AccountRecord, Role, UserRecord


class TenancyStore:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.accounts = database["accounts"]
        self.users = database["users"]

    async def ensure_indexes(self) -> None:
        await self.users.create_index([("account", ASCENDING)])

    async def create_account(self, name: str) -> AccountRecord:
        record = AccountRecord(name=check_name("account", name), created_at=datetime.now(UTC))
        try:
            await self.accounts.insert_one({"_id": record.name, **record.model_dump()})
        except DuplicateKeyError:
            return await self.get_account(name)  # creating it again is a no-op
        return record

    async def get_account(self, name: str) -> AccountRecord:
        document = await self.accounts.find_one({"_id": name})
        if document is None:
            raise ControlError(f"no account {name!r}; create it with `perdure account create {name}`")
        return AccountRecord.model_validate(document)

    async def list_accounts(self) -> list[AccountRecord]:
        return [AccountRecord.model_validate(d) async for d in self.accounts.find().sort("_id", ASCENDING)]

    async def add_user(self, email: str, account: str, role: Role) -> UserRecord:
        """Add a user to an account, or change the role of one already in it."""
        await self.get_account(account)
        record = UserRecord(email=email, account=account, role=role, created_at=datetime.now(UTC))
        user_id = f"{account}/{record.email.lower()}"
        existing = await self.users.find_one({"_id": user_id})
        if existing is not None:
            await self.users.update_one({"_id": user_id}, {"$set": {"role": role}})
            return UserRecord.model_validate({**existing, "role": role})
        await self.users.insert_one({"_id": user_id, **record.model_dump()})
        return record

    async def users_of(self, account: str) -> list[UserRecord]:
        cursor = self.users.find({"account": account}).sort("email", ASCENDING)
        return [UserRecord.model_validate(d) async for d in cursor]
