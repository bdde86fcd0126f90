"""The rules of starting a run, the same for the cell's engine, admission and the local environment."""

from __future__ import annotations

import uuid


def fresh_run_id(namespace: str, workflow_id: str, request_id: str) -> str:
    """Deterministic, so a redelivered start creates the same run id and is refused as a duplicate."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"perdure:{namespace}/{workflow_id}/{request_id}"))
