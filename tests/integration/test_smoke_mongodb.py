"""The MongoDB API, for real: the two primitives history appends rely on (invariant 2 of
docs/architecture.md)."""

from __future__ import annotations

import pytest
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tests.conftest import Document


async def test_compound_unique_index_rejects_a_duplicate(mongo_db: AsyncDatabase[Document]) -> None:
    batches = mongo_db["history"]
    await batches.create_index([("run_id", ASCENDING), ("first_event_id", ASCENDING)], unique=True)
    await batches.insert_one({"run_id": "r1", "first_event_id": 1, "events": ["started"]})
    await batches.insert_one({"run_id": "r2", "first_event_id": 1, "events": ["started"]})

    with pytest.raises(DuplicateKeyError):
        await batches.insert_one({"run_id": "r1", "first_event_id": 1, "events": ["forked"]})

    stored = await batches.find_one({"run_id": "r1", "first_event_id": 1})
    assert stored is not None and stored["events"] == ["started"]
    assert await batches.count_documents({}) == 2


async def test_conditional_update_on_a_stale_version_changes_nothing(
    mongo_db: AsyncDatabase[Document],
) -> None:
    runs = mongo_db["runs"]
    await runs.insert_one({"_id": "r1", "next_event_id": 4, "status": "running"})

    fresh = await runs.find_one_and_update(
        {"_id": "r1", "next_event_id": 4},
        {"$set": {"next_event_id": 6, "status": "running"}},
        return_document=ReturnDocument.AFTER,
    )
    assert fresh is not None and fresh["next_event_id"] == 6

    # A writer that still believes next_event_id is 4 must not win.
    stale = await runs.find_one_and_update(
        {"_id": "r1", "next_event_id": 4},
        {"$set": {"next_event_id": 5, "status": "completed"}},
        return_document=ReturnDocument.AFTER,
    )
    assert stale is None
    assert await runs.find_one({"_id": "r1"}) == {"_id": "r1", "next_event_id": 6, "status": "running"}
