"""Deployed apps as versioned, content-addressed artifacts: a source folder packed reproducibly (or a
wheel as built), named by the SHA-256 of its bytes, kept in GridFS in the control database (which only
the platform can reach), unpacked into the namespace's private worker folder."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from gridfs import AsyncGridFSBucket
from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase

ArtifactKind = Literal["source", "wheel"]
MAX_ARTIFACT_BYTES = 100 * 1024 * 1024
SKIPPED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


class ArtifactError(ValueError):
    pass


class Deployment(BaseModel):
    """A namespace's app as deployed: its artifact, its entry point, and what it registers."""

    version: int
    artifact: str  # SHA-256 of the artifact's bytes
    kind: ArtifactKind
    app: str  # module:attribute inside the artifact
    workflow_types: list[str]
    deployed_at: datetime


def pack(path: Path) -> tuple[bytes, ArtifactKind]:
    """A wheel as it is; a folder as a tar.gz whose bytes depend on its files' paths and contents only
    (sorted, no times, owners or modes beyond executable), so the same source has the same address."""
    if path.is_file():
        if path.suffix != ".whl":
            raise ArtifactError(f"{path}: a source folder or a wheel (.whl) is deployed")
        return path.read_bytes(), "wheel"
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such folder or wheel")
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not SKIPPED & set(p.parts)):
            relative = file.relative_to(path).as_posix()
            info = tarfile.TarInfo(relative)
            data = file.read_bytes()
            info.size, info.mode = len(data), 0o755 if file.stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    if len(data) > MAX_ARTIFACT_BYTES:
        raise ArtifactError(f"{path}: {len(data)} bytes packed; at most {MAX_ARTIFACT_BYTES} are deployed")
    return data, "source"


def address(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(data: bytes, kind: ArtifactKind, into: Path) -> None:
    """Unpack into ``into`` refusing any member that would land outside it (absolute paths, ``..``,
    links, devices)."""
    into.mkdir(parents=True, exist_ok=True)
    if kind == "wheel":
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            for name in wheel.namelist():
                _check_member(name)
            wheel.extractall(into)
        return
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            _check_member(member.name)
            if not (member.isfile() or member.isdir()):
                raise ArtifactError(f"artifact member {member.name!r} is not a file")
        tar.extractall(into, filter="data")


def _check_member(name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise ArtifactError(f"artifact member {name!r} would land outside its folder")


class ArtifactStore:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.bucket = AsyncGridFSBucket(database, bucket_name="artifacts")
        self.files = database["artifacts.files"]

    async def put(self, namespace: str, data: bytes, kind: ArtifactKind) -> str:
        """Store the artifact once (the same bytes, the same address); its address."""
        sha = address(data)
        if await self.files.find_one({"filename": sha}) is None:
            await self.bucket.upload_from_stream(
                sha,
                io.BytesIO(data),
                metadata={"namespace": namespace, "kind": kind, "stored_at": datetime.now(UTC)},
            )
        return sha

    async def get(self, sha: str) -> bytes:
        stream = await self.bucket.open_download_stream_by_name(sha)
        data: bytes = await stream.read()
        if address(data) != sha:
            raise ArtifactError(f"artifact {sha} does not match its address")
        return data


async def deploy(
    store: ArtifactStore,
    previous: Deployment | None,
    namespace: str,
    source: Path,
    app: str,
    read_manifest: Callable[[str, Path], Awaitable[list[str]]],
    folder_of: Callable[[str], Path],
) -> Deployment:
    """Pack ``source``, store it, unpack it where the namespace's workers will find it, read what it
    registers (``read_manifest`` runs its code in the namespace's sandbox), and give the deployment
    the next version."""
    data, kind = pack(source)
    sha = await store.put(namespace, data, kind)
    folder = folder_of(sha)
    if not folder.exists():
        unpack(data, kind, folder)
    workflow_types = await read_manifest(app, folder)
    return Deployment(
        version=(previous.version + 1) if previous is not None else 1,
        artifact=sha,
        kind=kind,
        app=app,
        workflow_types=workflow_types,
        deployed_at=datetime.now(UTC),
    )
