"""A tenant's batch commands (``Client.start_batch`` and a batch handle's requests), as admission hands
them over with the namespace of the vhost they arrived on: carried out on the control plane, where
batches run (``batch_requests``), and answered as the ingress protocol answers. The namespace is always
the vhost's: a tenant starts, sees and stops only its own namespace's batches."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from perdure.infra.settings import Settings
from perdure.platform.control.batch_requests import (
    BatchError,
    BatchExistsError,
    BatchLimitError,
    BatchNotFoundError,
    BatchUnavailableError,
    describe_batch,
    list_batches,
    start_batch,
    stop_batch,
)
from perdure.platform.core.payloads import PayloadTooLargeError
from perdure.platform.protocol.batch_wire import BatchDefinition, checked_batch_id
from perdure.platform.protocol.ingress_wire import BatchCommand, IngressReply
from perdure.platform.protocol.schedule_wire import first_error
from perdure.platform.stores.control_store import ControlError

log = logging.getLogger("perdure.control.batches")


async def carry_out(settings: Settings, namespace: str, command: BatchCommand) -> IngressReply:
    """Do what ``command`` asks of ``namespace``'s batches; a request that cannot be done is answered
    with why (a dependency failing raises: admission hands the command back to be taken again)."""
    try:
        return await _carry_out(settings, namespace, command)
    except ValidationError as exc:
        return IngressReply.failed("malformed", first_error(exc))
    except BatchNotFoundError as exc:
        return IngressReply.failed("not_found", str(exc))
    except BatchExistsError as exc:
        return IngressReply.failed("already_started", str(exc))
    except BatchLimitError as exc:
        return IngressReply.failed("quota_exceeded", str(exc))
    except BatchUnavailableError as exc:
        return IngressReply.failed("unavailable", str(exc))
    except PayloadTooLargeError as exc:
        return IngressReply.failed("payload_too_large", str(exc), size=exc.size, limit=exc.limit)
    except (BatchError, ValueError) as exc:  # a bad query among them: its message points at the token
        return IngressReply.failed("malformed", str(exc))
    except ControlError as exc:  # the namespace went away meanwhile
        return IngressReply.failed("not_found", str(exc))


async def _carry_out(settings: Settings, namespace: str, command: BatchCommand) -> IngressReply:
    if command.action == "start":
        # The vhost's namespace, whatever the body says.
        definition = BatchDefinition.model_validate({**(command.definition or {}), "namespace": namespace})
        started = await start_batch(settings, definition, command.request_id)
        log.info("batch started", extra={"namespace": namespace, "batch": definition.batch_id})
        return IngressReply(ok=True, batch={"batch": definition.batch_id, "matching": started.matching})
    if command.action == "list":
        return IngressReply(ok=True, batches=await list_batches(settings, namespace))
    batch_id = checked_batch_id(command.batch_id)
    if command.action == "describe":
        described = await describe_batch(settings, namespace, batch_id)
    else:
        described = await stop_batch(settings, namespace, batch_id, command.reason)
    described.pop("workflow", None)  # where it runs on the control plane: not the tenant's to know
    return IngressReply(ok=True, batch=described)
