"""Writes shaped for MongoDB-compatible servers without multi-document transactions, FerretDB v1 above
all: bulk inserts that tolerate duplicates (the idempotence of every writer here rests on unique
``_id``s), and changes sent as single statements, a few at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pymongo.errors import BulkWriteError

T = TypeVar("T")
Document = dict[str, Any]

# FerretDB v1 serves a multi-statement update or delete command by holding one pooled connection per
# statement, and deadlocks once they outnumber its pool (100 on SQLite). Changes are therefore sent as
# single-statement commands, a few at a time; inserts, which query nothing, still go in bulk.
WRITE_CONCURRENCY = 8


async def each(operations: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the operations concurrently, at most ``WRITE_CONCURRENCY`` at a time, keeping their order."""
    gate = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def run(operation: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await operation()

    return list(await asyncio.gather(*(run(op) for op in operations)))


async def insert_ignoring_duplicates(collection: Any, documents: Sequence[Document]) -> list[Document]:
    """Insert all; returns the documents refused as duplicates (any other error is raised)."""
    if not documents:
        return []
    try:
        await collection.insert_many(list(documents), ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        return [documents[e["index"]] for e in errors]
    return []
