"""Running a coroutine as a CLI command, turning expected errors into one clear line and exit code 1."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from aio_pika.exceptions import AMQPConnectionError
from aiokafka.errors import KafkaConnectionError
from pymongo.errors import ServerSelectionTimeoutError

from perdure.infra.bounded_stop import EXIT_CODE_OVERRAN, StopOverranError, end_process
from perdure.platform.core.failures import ApplicationError
from perdure.platform.core.payloads import PayloadTooLargeError
from perdure.platform.stores.backups import BackupError
from perdure.platform.stores.control_store import ControlError
from perdure.tenants.app_loader import AppLoadError
from perdure.tenants.client_errors import WorkflowNotFoundError, WorkflowUpdateFailedError

T = TypeVar("T")
EXPECTED = (
    BackupError,
    ControlError,
    AppLoadError,
    WorkflowNotFoundError,
    PayloadTooLargeError,
    ValueError,
    ApplicationError,
    WorkflowUpdateFailedError,
)
# A service that cannot be reached: say which, not a traceback.
UNREACHABLE = (KafkaConnectionError, ServerSelectionTimeoutError, AMQPConnectionError, ConnectionError)


def run_command(name: str, coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(_ending_on_overrun(coroutine))
    except EXPECTED as exc:
        # An update's failure says why in its cause (the validator's or the handler's error).
        why = f": {exc.__cause__}" if isinstance(exc, WorkflowUpdateFailedError) and exc.__cause__ else ""
        typer.echo(f"perdure {name}: {exc}{why}", err=True)
        raise typer.Exit(1) from None
    except UNREACHABLE as exc:
        typer.echo(
            f"perdure {name}: a service is unreachable ({type(exc).__name__}: {exc}); "
            "is the stack up? (`perdure stack status`)",
            err=True,
        )
        raise typer.Exit(1) from None


async def _ending_on_overrun(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return await coroutine
    except StopOverranError:
        # What it abandoned is in its log; the loop's own clean-up would wait on the same stuck calls.
        end_process(EXIT_CODE_OVERRAN)
        raise
