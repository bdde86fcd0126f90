"""A tenant's schedule commands (``Client.create_schedule`` and a schedule handle's requests), as
admission hands them over with the namespace of the vhost they arrived on: carried out on the control
plane, where schedules run (``schedule_requests``), and answered as the ingress protocol answers. The
namespace is always the vhost's: a tenant names only its own schedules."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from perdure.infra.settings import Settings
from perdure.platform.control.schedule_requests import (
    ScheduleError,
    ScheduleExistsError,
    ScheduleLimitError,
    ScheduleNotFoundError,
    ScheduleUnavailableError,
    create_schedule,
    describe_schedule,
    list_schedules,
    send_request,
)
from perdure.platform.core.payloads import PayloadTooLargeError
from perdure.platform.protocol.ingress_wire import IngressReply, ScheduleCommand
from perdure.platform.protocol.schedule_wire import (
    ScheduleDefinition,
    ScheduleRequest,
    checked_schedule_id,
    first_error,
)
from perdure.platform.stores.control_store import ControlError

log = logging.getLogger("perdure.control.schedules")


async def carry_out(settings: Settings, namespace: str, command: ScheduleCommand) -> IngressReply:
    """Do what ``command`` asks of ``namespace``'s schedules; a request that cannot be done is answered
    with why (a dependency failing raises: admission hands the command back to be taken again)."""
    try:
        return await _carry_out(settings, namespace, command)
    except ValidationError as exc:
        return IngressReply.failed("malformed", first_error(exc))
    except ScheduleNotFoundError as exc:
        return IngressReply.failed("not_found", str(exc))
    except ScheduleExistsError as exc:
        return IngressReply.failed("already_started", str(exc))
    except ScheduleLimitError as exc:
        return IngressReply.failed("quota_exceeded", str(exc))
    except ScheduleUnavailableError as exc:
        return IngressReply.failed("unavailable", str(exc))
    except PayloadTooLargeError as exc:
        return IngressReply.failed("payload_too_large", str(exc), size=exc.size, limit=exc.limit)
    except (ScheduleError, ValueError) as exc:
        return IngressReply.failed("malformed", str(exc))
    except ControlError as exc:  # the namespace went away meanwhile
        return IngressReply.failed("not_found", str(exc))


async def _carry_out(settings: Settings, namespace: str, command: ScheduleCommand) -> IngressReply:
    if command.action == "create":
        # The vhost's namespace, whatever the body says.
        definition = ScheduleDefinition.model_validate({**(command.definition or {}), "namespace": namespace})
        await create_schedule(settings, definition, command.request_id)
        log.info("schedule created", extra={"namespace": namespace, "schedule": definition.schedule_id})
        return IngressReply(ok=True, outcome="created")
    if command.action == "list":
        return IngressReply(ok=True, schedules=await list_schedules(settings, namespace))
    schedule_id = checked_schedule_id(command.schedule_id)
    if command.action == "describe":
        described = await describe_schedule(settings, namespace, schedule_id)
        described.pop("workflow", None)  # where it runs on the control plane: not the tenant's to know
        return IngressReply(ok=True, schedule=described)
    request = ScheduleRequest.model_validate(
        {**(command.request or {}), "kind": command.action, "request_id": command.request_id}
    )
    outcome = await send_request(settings, namespace, schedule_id, request)
    return IngressReply(ok=True, outcome=outcome)
