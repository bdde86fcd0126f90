"""What a process that imports tenant code gets of the platform's environment: where Python finds code,
and nothing else (no settings, no credentials)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


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
