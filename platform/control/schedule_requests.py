"""Reaching schedules from outside the control plane (the CLI; the console and a tenant's client path
later): create one once every check that can be made before anything starts has passed, send one a
request and wait for what became of it, describe one, list a namespace's. Each goes through an ops
client of the system namespace, where the ``Schedule`` workflows run."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from perdure.infra.settings import Settings
from perdure.platform.control.workflow_ids import SCHEDULE, schedule_workflow_id, schedules_prefix
from perdure.platform.core.failures import ApplicationError
from perdure.platform.core.payloads import PayloadTooLargeError, default_converter
from perdure.platform.core.start_rules import fresh_run_id
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.protocol.schedule_wire import RequestKind, ScheduleDefinition, ScheduleRequest
from perdure.platform.stores.control_store import ControlError
from perdure.platform.stores.run_bodies import state_of
from perdure.tenants.client_errors import WorkflowNotFoundError

OPEN_STATUSES = ("running", "blocked")
# How long a caller waits for the schedule to take what it sent (a start, a request), and how often it
# looks; a request not seen by the schedule is sent again this often (same request id: taken once).
CONFIRM_SECONDS = 30.0
LOOK_EVERY = 0.2
SEND_AGAIN_EVERY = 2.0
QUERY_TIMEOUT = 10.0
# Schedules a namespace may have: each is a workflow of the system namespace, which a tenant must not be
# able to fill.
MAX_SCHEDULES = 200


class ScheduleError(ValueError):
    """A schedule request that cannot be done, said in one line."""


class ScheduleNotFoundError(ScheduleError, LookupError):
    """No such schedule in the namespace (never made, or deleted)."""


class ScheduleExistsError(ScheduleError):
    """A create of a schedule id the namespace has already."""


class ScheduleLimitError(ScheduleError):
    """A create in a namespace that has as many schedules as it may."""


class ScheduleUnavailableError(ScheduleError):
    """The control plane did not do what was asked in time (or is not there): asking again may work."""


@contextlib.asynccontextmanager
async def system_ops(settings: Settings) -> AsyncIterator[OpsClient]:
    try:
        ops = await OpsClient.connect(settings, settings.system_namespace)
    except ControlError:
        raise ScheduleUnavailableError(
            "the control plane is not bootstrapped: run `perdure controlplane bootstrap --cell CELL`"
        ) from None
    async with ops:
        yield ops


async def create_schedule(
    settings: Settings, definition: ScheduleDefinition, request_id: str | None = None
) -> str:
    """Start the schedule's workflow; returns its workflow id (in the system namespace). Refused, with
    nothing started, for a namespace that does not exist or does not have the workflow type, arguments
    over the namespace's payload limit, a schedule id the namespace has already, or a namespace that has
    ``MAX_SCHEDULES`` already. The same ``request_id`` sent again (a retry) is the same create: answered
    with the schedule it made."""
    request_id = request_id or str(uuid.uuid4())
    async with system_ops(settings) as ops:
        record = await ops.databases.control.get_namespace(definition.namespace)
        if record.status == "deleted":
            raise ScheduleError(f"namespace {record.name!r} is deleted")
        known = record.workflow_types
        if known and definition.workflow_type not in known:
            raise ScheduleError(
                f"namespace {record.name!r} has no workflow type {definition.workflow_type!r} "
                f"(it has: {', '.join(sorted(known))})"
            )
        size = sum(p.size for p in default_converter.to_payloads(definition.args, "workflow input"))
        if size > record.quota.max_payload_bytes:
            raise PayloadTooLargeError(size, record.quota.max_payload_bytes, "workflow input")
        workflow_id = schedule_workflow_id(definition.namespace, definition.schedule_id)
        made = fresh_run_id(ops.namespace.name, workflow_id, request_id)
        latest = await ops.store.latest_run(ops.namespace.name, workflow_id)
        if latest is not None and latest["_id"] == made:
            return workflow_id  # this very request made it (a retry after a lost answer)
        if _is_open(latest):
            raise _exists(definition)
        open_schedules = await _count_open(ops, definition.namespace)
        if open_schedules >= MAX_SCHEDULES:
            raise ScheduleLimitError(
                f"namespace {definition.namespace!r} has {open_schedules} schedules, the most it may have "
                f"({MAX_SCHEDULES}): delete one first"
            )
        await ops.start_workflow(
            SCHEDULE, definition.model_dump(mode="json"), id=workflow_id, request_id=request_id
        )
        # The engine takes the start, or refuses it if another create of the same id won the race.
        deadline = asyncio.get_running_loop().time() + CONFIRM_SECONDS
        while await ops.store.run(made) is None:
            latest = await ops.store.latest_run(ops.namespace.name, workflow_id)
            if _is_open(latest) and latest is not None and latest["_id"] != made:
                raise _exists(definition)
            if asyncio.get_running_loop().time() > deadline:
                raise ScheduleUnavailableError(
                    f"the schedule's workflow did not start within {CONFIRM_SECONDS:g} s: is the control "
                    f"cell {ops.namespace.cell!r} running?"
                )
            await asyncio.sleep(LOOK_EVERY)
        return workflow_id


async def send_request(
    settings: Settings,
    namespace: str,
    schedule_id: str,
    request: ScheduleRequest,
    *,
    timeout: float = CONFIRM_SECONDS,
) -> str:
    """Send ``request`` to the schedule and return what became of it (``paused``, ``started <id>``, ...).
    Sent again under the same request id until the schedule has it (a signal can be lost as the workflow
    continues as new); the schedule takes it once. A request taken but not carried out within
    ``timeout`` (the schedule busy starting a backlog) is answered as such."""
    async with system_ops(settings) as ops:
        workflow_id = schedule_workflow_id(namespace, schedule_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent_at: float | None = None
        taken = False
        ask = _Asker(ops, workflow_id)
        while True:
            document = await ops.store.latest_run(ops.namespace.name, workflow_id)
            if document is None or (document["status"] != "continued_as_new" and not _is_open(document)):
                if request.kind == "delete" and sent_at is not None and document is not None:
                    return "deleted"
                raise ScheduleNotFoundError(f"no schedule {schedule_id!r} in namespace {namespace!r}")
            if _is_open(document):
                if not taken and (sent_at is None or loop.time() - sent_at >= SEND_AGAIN_EVERY):
                    await ops.signal(workflow_id, request.kind, request.signal_body())
                    sent_at = loop.time()
                answer = await ask("request", request.request_id)
                if isinstance(answer, dict):
                    taken = True
                    if answer.get("done"):
                        return str(answer.get("outcome", ""))
            if loop.time() > deadline:
                if taken:
                    return f"{request.kind} taken; not carried out within {timeout:g} s (see describe)"
                raise ScheduleUnavailableError(
                    f"schedule {schedule_id!r} did not take the {request.kind} within {timeout:g} s "
                    f"(`perdure workflow describe {ops.namespace.name} {workflow_id}` says why{ask.problem})"
                )
            await asyncio.sleep(LOOK_EVERY)


async def describe_schedule(settings: Settings, namespace: str, schedule_id: str) -> dict[str, Any]:
    """The schedule as its workflow describes it, with that workflow's id and status."""
    async with system_ops(settings) as ops:
        workflow_id = schedule_workflow_id(namespace, schedule_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_SECONDS
        ask = _Asker(ops, workflow_id)
        while True:
            document = await ops.store.latest_run(ops.namespace.name, workflow_id)
            if document is None or (document["status"] != "continued_as_new" and not _is_open(document)):
                raise ScheduleNotFoundError(f"no schedule {schedule_id!r} in namespace {namespace!r}")
            answer = await ask("describe") if _is_open(document) else None
            if isinstance(answer, dict):
                answer["workflow"] = f"{workflow_id} in {ops.namespace.name} ({document['status']})"
                return answer
            if loop.time() > deadline:
                raise ScheduleUnavailableError(
                    f"schedule {schedule_id!r} did not answer within {CONFIRM_SECONDS:g} s{ask.problem}"
                )
            await asyncio.sleep(LOOK_EVERY)  # between two runs of its chain, or not started yet


async def list_schedules(settings: Settings, namespace: str) -> list[dict[str, Any]]:
    """The namespace's schedules, by id: what each starts, when, and whether it is paused."""
    async with system_ops(settings) as ops:
        prefix = schedules_prefix(namespace)
        found: dict[str, dict[str, Any]] = {}
        async for run in open_schedule_runs(ops, namespace):
            document = await ops.store.latest_run(ops.namespace.name, run["workflow_id"])
            if document is not None and _is_open(document):
                found[run["workflow_id"]] = _listed(document, prefix)
        return [found[key] for key in sorted(found)]


async def _count_open(ops: OpsClient, namespace: str) -> int:
    return len({run["workflow_id"] async for run in open_schedule_runs(ops, namespace)})


async def open_schedule_runs(ops: OpsClient, namespace: str) -> AsyncIterator[dict[str, Any]]:
    """The open runs of the namespace's schedule workflows (a schedule between two runs of its chain
    may be missing: its latest run is looked up by the caller when that matters)."""
    prefix = schedules_prefix(namespace)
    for status in OPEN_STATUSES:
        after = None
        while True:
            page = await ops.store.list_page(
                ops.namespace.name,
                status=status,
                workflow_type=SCHEDULE,
                workflow_id_prefix=prefix,
                after=after,
                limit=500,
            )
            for run in page:
                yield run
            if len(page) < 500:
                break
            after = (page[-1]["start_time"], page[-1]["_id"])


def new_request(kind: RequestKind, **fields: Any) -> ScheduleRequest:
    return ScheduleRequest(kind=kind, request_id=str(uuid.uuid4()), **fields)


class _Asker:
    """Queries a schedule; an answer it cannot give yet (between two runs of its chain, its code not
    started, a worker slow to answer) is None, and the last such problem is kept to say why."""

    def __init__(self, ops: OpsClient, workflow_id: str) -> None:
        self.ops = ops
        self.workflow_id = workflow_id
        self.problem = ""

    async def __call__(self, query: str, *args: Any) -> Any:
        try:
            return await self.ops.query(self.workflow_id, query, *args, timeout=QUERY_TIMEOUT)
        except (WorkflowNotFoundError, ApplicationError, TimeoutError) as exc:
            self.problem = f"; last answer: {exc or type(exc).__name__}"
            return None


def _listed(document: dict[str, Any], prefix: str) -> dict[str, Any]:
    attributes = state_of(document).get("search_attributes") or {}
    return {
        "schedule": str(document["workflow_id"]).removeprefix(prefix),
        "workflow_type": attributes.get("WorkflowType", "?"),
        "spec": attributes.get("Spec", "?"),
        "state": "paused" if attributes.get("Paused") else "active",
        "status": document["status"],
    }


def _is_open(document: dict[str, Any] | None) -> bool:
    return document is not None and document["status"] in OPEN_STATUSES


def _exists(definition: ScheduleDefinition) -> ScheduleError:
    return ScheduleExistsError(
        f"schedule {definition.schedule_id!r} exists in namespace {definition.namespace!r} "
        "(delete it first, or choose another id)"
    )
