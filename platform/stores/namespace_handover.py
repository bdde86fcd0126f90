"""Copying a namespace's runs from one cell's database to another's, for a move (see
``platform/control/namespace_move.py``): each run's document, its history batches and its execution's
pointer, its partition computed for the target cell. Copies replace what they find, so a step taken
again after a crash copies the same documents again."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pymongo import ReplaceOne

from perdure.platform.stores.run_store import RunStore

BATCH = 500
Document = dict[str, Any]


async def _replace_all(store: RunStore, collection: str, documents: list[Document]) -> None:
    if documents:
        requests = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in documents]
        await store.db[collection].bulk_write(requests, ordered=False)


async def copy_namespace_runs(
    source: RunStore, target: RunStore, namespace: str, partition_of: Callable[[str], int]
) -> int:
    """Copy every run of ``namespace`` (open and closed); the number of runs copied."""
    runs: list[Document] = []
    copied = 0
    async for document in source.runs.find({"namespace": namespace}):
        # The target's partition owners fence by their own epochs: the source's mean nothing there.
        document.update(partition=partition_of(document["workflow_id"]), epoch=0)
        runs.append(document)
        if len(runs) >= BATCH:
            copied += await _copy_runs(source, target, runs)
            runs = []
    copied += await _copy_runs(source, target, runs)
    pointers = [d async for d in source.runs.find({"_id": {"$regex": f"^{re.escape(_pointers(namespace))}"}})]
    await _replace_all(target, "runs", pointers)
    return copied


def _pointers(namespace: str) -> str:
    return f"latest:{namespace}/"


async def _copy_runs(source: RunStore, target: RunStore, runs: list[Document]) -> int:
    if not runs:
        return 0
    ids = [d["_id"] for d in runs]
    batches = [d async for d in source.history.find({"run_id": {"$in": ids}})]
    # History first: a run document found on the target has its history there.
    await _replace_all(target, "history", batches)
    await _replace_all(target, "runs", runs)
    return len(runs)


async def remove_namespace_runs(store: RunStore, namespace: str) -> int:
    """Remove what a cell kept of a namespace that moved away: its runs, histories, pointers and the
    records held for the move (once handed over)."""
    removed = 0
    while True:
        ids = [d["_id"] async for d in store.runs.find({"namespace": namespace}, {"_id": 1}).limit(BATCH)]
        if not ids:
            break
        await store.history.delete_many({"run_id": {"$in": ids}})
        await store.runs.delete_many({"_id": {"$in": ids}})
        removed += len(ids)
    await store.runs.delete_many({"_id": {"$regex": f"^{re.escape(_pointers(namespace))}"}})
    await store.held.delete_many({"namespace": namespace})
    return removed
