"""A step of a control-plane workflow: one activity, retried by the workflow's policy until it goes
through (each activity is written to be run again)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from perdure.tenants import RetryPolicy, workflow

STEP_TIMEOUT = timedelta(minutes=5)


async def run_step(activity: Any, *args: Any, retry_policy: RetryPolicy) -> Any:
    return await workflow.execute_activity(
        activity, *args, start_to_close_timeout=STEP_TIMEOUT, retry_policy=retry_policy
    )
