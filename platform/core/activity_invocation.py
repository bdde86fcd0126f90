"""Running one activity attempt: decode its input, run the tenant's function, encode the outcome.

Shared by the local test environment and the cell's activity executors; the caller decides how the
heartbeats and the outcome travel back to the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from perdure.platform.core.activity_context import ActivityContext, ActivityInfo, current_activity
from perdure.platform.core.definitions import UnknownActivityTypeError, WorkflowRegistry
from perdure.platform.core.failures import ApplicationError, failure_from_exception
from perdure.platform.core.messages import ActivityCompleted, ActivityFailed
from perdure.platform.core.outbox import DispatchActivity
from perdure.platform.core.payloads import DataConverter, Payload


async def invoke_activity(
    task: DispatchActivity,
    registry: WorkflowRegistry,
    converter: DataConverter,
    heartbeat: Callable[[list[Payload]], None],
) -> ActivityCompleted | ActivityFailed:
    def failed(exc: BaseException) -> ActivityFailed:
        return ActivityFailed(
            run_id=task.run_id,
            scheduled_event_id=task.scheduled_event_id,
            attempt=task.attempt,
            failure=failure_from_exception(exc, converter),
        )

    try:
        definition = registry.get_activity(task.activity_type)
    except UnknownActivityTypeError as exc:
        # Retryable: an app deployed later may know it.
        return failed(ApplicationError(str(exc), type="UnknownActivityType"))
    try:
        args = converter.from_payloads(task.input, definition.param_types)
        details = converter.from_payloads(task.heartbeat_details)
    except Exception as exc:
        return failed(
            ApplicationError(
                f"cannot decode the activity input: {exc}", type="PayloadDecodeError", non_retryable=True
            )
        )
    info = ActivityInfo(
        namespace=task.namespace,
        workflow_id=task.workflow_id,
        run_id=task.run_id,
        workflow_type=task.workflow_type,
        activity_type=task.activity_type,
        scheduled_event_id=task.scheduled_event_id,
        attempt=task.attempt,
        scheduled_time=task.scheduled_time,
        heartbeat_timeout=task.options.heartbeat_timeout,
        heartbeat_details=details,
    )
    context = ActivityContext(
        info, heartbeat=lambda values: heartbeat(converter.to_payloads(values, "heartbeat"))
    )
    token = current_activity.set(context)
    try:
        if definition.is_async:
            result = await definition.fn(*args)
        else:
            # to_thread carries the context (and so activity.info()) into the worker thread.
            result = await asyncio.to_thread(definition.fn, *args)
        payload = converter.to_payload(result, f"result of activity {task.activity_type!r}")
    except Exception as exc:
        return failed(exc)
    finally:
        current_activity.reset(token)
    return ActivityCompleted(
        run_id=task.run_id, scheduled_event_id=task.scheduled_event_id, attempt=task.attempt, result=payload
    )
