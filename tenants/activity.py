"""What activity code imports: its own ``info()`` and ``heartbeat()``."""

from __future__ import annotations

from typing import Any

from perdure.platform.core.activity_context import ActivityInfo, activity_context, current_activity

__all__ = ["ActivityInfo", "heartbeat", "in_activity", "info"]


def info() -> ActivityInfo:
    """Attempt number, timeouts and the last heartbeat details of an earlier attempt."""
    return activity_context().info


def heartbeat(*details: Any) -> None:
    """Report liveness (and progress to resume from on a retry); resets the heartbeat timeout."""
    activity_context().heartbeat(list(details))


def in_activity() -> bool:
    return current_activity.get() is not None
