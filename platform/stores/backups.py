"""Backups of the platform's databases: the control database, the metering database and each cell's
database (runs, histories, journals, epochs), one gzipped file of MongoDB Extended JSON per collection
(canonical mode: every BSON type round-trips) plus a manifest with the counts and the indexes.

A backup names databases by their role ("control", "metering", "cell/<name>"), not by their names, so
it restores under another ``PERDURE_DATABASE_PREFIX`` (a fresh prefix to inspect or replay old
histories, or another installation). Taken from a live cell it is not one point in time: each
collection is read as it stands when its turn comes; take it with the cell's processes stopped for an
exact copy (histories are append-only and a run's document is rewritten by each engine batch, so a live
backup may hold a run document a batch older or newer than its history's tail).
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util
from bson.errors import BSONError
from pydantic import BaseModel
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from perdure.infra.settings import Settings

MANIFEST = "manifest.json"
FORMAT = "perdure-backup/1"
BATCH = 1000
_JSON_OPTIONS = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True)


class BackupError(Exception):
    pass


class CollectionCopy(BaseModel):
    name: str
    documents: int
    # As ``list_indexes`` gave them, without ``_id_`` (made with the collection) and ``v``/``ns``.
    indexes: list[dict[str, Any]] = []


class DatabaseCopy(BaseModel):
    role: str  # "control", "metering" or "cell/<name>"
    collections: list[CollectionCopy]


class Manifest(BaseModel):
    format: str = FORMAT
    created_at: datetime
    platform_version: str
    source_prefix: str
    databases: list[DatabaseCopy]


def database_name(settings: Settings, role: str) -> str:
    """The database that holds ``role`` under these settings."""
    if role == "control":
        return settings.control_database
    if role == "metering":
        return settings.metering_database
    if role.startswith("cell/") and role != "cell/":
        return settings.cell_database(role.removeprefix("cell/"))
    raise BackupError(f"unknown database role {role!r} in the backup")


def _file(folder: Path, role: str, collection: str) -> Path:
    return folder / role.replace("/", "__") / f"{collection}.jsonl.gz"


async def create_backup(
    client: AsyncMongoClient[dict[str, Any]], settings: Settings, folder: Path, cells: list[str]
) -> Manifest:
    """Write a backup of the control and metering databases and of ``cells``' databases to ``folder``
    (which must not hold a backup already)."""
    if (folder / MANIFEST).exists():
        raise BackupError(f"{folder} holds a backup already; choose an empty folder")
    roles = ["control", "metering", *(f"cell/{cell}" for cell in cells)]
    copies = []
    for role in roles:
        database = client[database_name(settings, role)]
        collections = []
        for name in sorted(await database.list_collection_names()):
            count = await _dump(database, name, _file(folder, role, name))
            collections.append(
                CollectionCopy(name=name, documents=count, indexes=await _indexes(database, name))
            )
        copies.append(DatabaseCopy(role=role, collections=collections))
    manifest = Manifest(
        created_at=datetime.now(UTC),
        platform_version=settings.platform_version,
        source_prefix=settings.database_prefix,
        databases=copies,
    )
    # Written last: a folder without a manifest is a backup that did not finish.
    (folder / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    return manifest


async def _dump(database: AsyncDatabase[dict[str, Any]], collection: str, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with gzip.open(path, "wt", encoding="utf-8") as out:
        async for document in database[collection].find({}, sort=[("_id", 1)]):
            out.write(json_util.dumps(document, json_options=_JSON_OPTIONS))
            out.write("\n")
            count += 1
    return count


async def _indexes(database: AsyncDatabase[dict[str, Any]], collection: str) -> list[dict[str, Any]]:
    indexes = []
    async for index in await database[collection].list_indexes():
        spec = {k: v for k, v in dict(index).items() if k not in ("v", "ns")}
        if spec.get("name") != "_id_":
            spec["key"] = list(dict(spec["key"]).items())
            indexes.append(spec)
    return indexes


def read_manifest(folder: Path) -> Manifest:
    try:
        manifest = Manifest.model_validate_json((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{folder} holds no finished backup (no {MANIFEST})") from None
    except ValueError as exc:
        raise BackupError(f"{folder}/{MANIFEST} is not a backup manifest: {str(exc)[:300]}") from None
    if manifest.format != FORMAT:
        raise BackupError(f"backup format {manifest.format!r} is not {FORMAT!r}")
    return manifest


async def restore_backup(
    client: AsyncMongoClient[dict[str, Any]], settings: Settings, folder: Path
) -> Manifest:
    """Restore the backup in ``folder`` into the databases of ``settings`` (its prefix), which must be
    empty: a restore never mixes a backup with live data. Every file is checked against the manifest
    before anything is written."""
    manifest = read_manifest(folder)
    for copy in manifest.databases:
        database = client[database_name(settings, copy.role)]
        held = [
            n for n in await database.list_collection_names() if await database[n].estimated_document_count()
        ]
        if held:
            raise BackupError(
                f"database {database.name} ({copy.role}) holds data ({', '.join(sorted(held))}); "
                "restore into a fresh PERDURE_DATABASE_PREFIX, or drop it first"
            )
        for collection in copy.collections:
            path = _file(folder, copy.role, collection.name)
            if not path.exists():
                raise BackupError(f"the backup lacks {copy.role}/{collection.name}")
            # Every document read once before any is written: a damaged file leaves nothing half-restored.
            found = 0
            async for batch in _batches(path):
                found += len(batch)
            if found != collection.documents:
                raise BackupError(
                    f"{copy.role}/{collection.name}: {found} documents in the file, "
                    f"{collection.documents} in the manifest"
                )
    for copy in manifest.databases:
        database = client[database_name(settings, copy.role)]
        for collection in copy.collections:
            async for batch in _batches(_file(folder, copy.role, collection.name)):
                await database[collection.name].insert_many(batch, ordered=False)
            for index in collection.indexes:
                options = {k: v for k, v in index.items() if k != "key"}
                await database[collection.name].create_index([tuple(k) for k in index["key"]], **options)
    return manifest


async def _batches(path: Path) -> AsyncIterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                document = json_util.loads(line, json_options=_JSON_OPTIONS)
            except (ValueError, TypeError, BSONError) as exc:
                raise BackupError(f"{path.name}, line {number}: not a document ({str(exc)[:200]})") from None
            if not isinstance(document, dict):
                raise BackupError(f"{path.name}, line {number}: not a document")
            batch.append(document)
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch
