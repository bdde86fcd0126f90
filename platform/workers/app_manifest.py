"""What an app registers (its workflow and activity types), read in a separate process: the platform
learns it without importing tenant code into its own processes.

``python -m perdure.platform.workers.app_manifest MOD:ATTR`` prints the manifest as JSON; the child
gets no environment beyond what finding the code needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from perdure.tenants.app_loader import AppLoadError, load_app

if TYPE_CHECKING:
    from perdure.platform.workers.sandbox import Sandbox

MANIFEST_TIMEOUT_SECONDS = 30.0


class AppManifest(BaseModel):
    workflow_types: list[str]
    activity_types: list[str]


def code_paths() -> list[str]:
    """Where this process finds code that is not its interpreter's own (apps, the project): the
    folders a process importing a namespace's app needs on its path."""
    installation = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    entries = [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path, os.getcwd()]
    paths: list[str] = []
    for entry in entries:
        if not entry or not Path(entry).is_dir():
            continue
        path = Path(entry).resolve()
        if any(path == root or root in path.parents for root in installation):
            continue
        if {"site-packages", "dist-packages"} & set(path.parts) or str(path) in paths:
            continue
        paths.append(str(path))
    return paths


def code_environment() -> dict[str, str]:
    """All a process that imports tenant code is given of the platform's environment: where Python
    finds code. No settings, no credentials."""
    kept = {name: os.environ[name] for name in ("PATH", "LANG") if name in os.environ}
    kept["PYTHONPATH"] = os.pathsep.join(code_paths())
    return kept


async def read_manifest(
    app: str, *, isolated_as: Sandbox | None = None, code: Path | None = None
) -> AppManifest:
    """Raises ``AppLoadError`` if the app does not load. Importing an app runs its code: with
    ``isolated_as``, in that namespace's sandbox (its user, limits and interpreter), as its workers
    will; ``code`` is the folder of a deployed artifact (else the app is found on the platform's
    path)."""
    environment = code_environment()
    if code is not None:
        environment["PYTHONPATH"] = str(code)
    options: dict[str, object] = {}
    python = sys.executable
    if isolated_as is not None:
        options = await asyncio.to_thread(isolated_as.prepare)
        environment = isolated_as.environment({"PYTHONPATH": environment["PYTHONPATH"]})
        python = str(isolated_as.python)
    process = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "perdure.platform.workers.app_manifest",
        app,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        **options,  # type: ignore[arg-type]
    )
    if isolated_as is not None:
        isolated_as.enter(process.pid)
    try:
        out, err = await asyncio.wait_for(process.communicate(), MANIFEST_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AppLoadError(f"app {app!r} did not load within {MANIFEST_TIMEOUT_SECONDS:.0f}s") from None
    finally:
        if isolated_as is not None:
            isolated_as.remove()
    if process.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()
        raise AppLoadError(reason[-1] if reason else f"app {app!r} did not load")
    return AppManifest.model_validate_json(out)


def main() -> None:
    try:
        registry = load_app(sys.argv[1])
    except AppLoadError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(1) from None
    manifest = AppManifest(
        workflow_types=sorted(getattr(registry, "workflows", {})),
        activity_types=sorted(getattr(registry, "activities", {})),
    )
    print(json.dumps(manifest.model_dump()))


if __name__ == "__main__":
    main()
