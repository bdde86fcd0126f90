"""What an app registers (its workflow and activity types), read in a separate process: the platform
learns it without importing tenant code into its own processes.

``python -m perdure.platform.sandboxing.app_manifest MOD:ATTR`` prints the manifest as JSON; the child
gets no environment beyond what finding the code needs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from perdure.platform.sandboxing.code_environment import code_environment
from perdure.platform.sandboxing.sandbox import Sandbox
from perdure.tenants.app_loader import AppLoadError, load_app

MANIFEST_TIMEOUT_SECONDS = 30.0


class AppManifest(BaseModel):
    workflow_types: list[str]
    activity_types: list[str]


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
        "perdure.platform.sandboxing.app_manifest",
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
