"""The context an activity runs in: who it is, which attempt, and where heartbeats go."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class ActivityInfo:
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    activity_type: str
    scheduled_event_id: int
    attempt: int
    scheduled_time: datetime
    heartbeat_timeout: timedelta | None
    # The details of the last heartbeat of an earlier attempt, to resume from.
    heartbeat_details: list[Any]


@dataclass
class ActivityContext:
    info: ActivityInfo
    heartbeat: Callable[[list[Any]], None]


current_activity: contextvars.ContextVar[ActivityContext | None] = contextvars.ContextVar(
    "perdure_activity", default=None
)


def activity_context() -> ActivityContext:
    context = current_activity.get()
    if context is None:
        raise RuntimeError(
            "not in an activity: activity.info() and activity.heartbeat() work only inside one"
        )
    return context
