"""Reaching batch operations from outside the control plane (the CLI; a tenant's client through
admission): start one once every check that can be made before anything starts has passed, describe
one, list a namespace's, stop one. Each goes through an ops client of the system namespace, where the
``Batch`` workflows run."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from perdure.infra.settings import Settings
from perdure.platform.control.workflow_ids import BATCH, batch_workflow_id, batches_prefix
from perdure.platform.core.failures import ApplicationError
from perdure.platform.core.payloads import Payload, PayloadTooLargeError, default_converter
from perdure.platform.core.start_rules import fresh_run_id
from perdure.platform.core.visibility_query import QueryError, parse_query
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.protocol.batch_wire import MAX_SIGNAL_INPUT_BYTES, BatchDefinition, checked_batch_id
from perdure.platform.stores import run_search
from perdure.platform.stores.control_store import ControlError
from perdure.platform.stores.run_bodies import state_of
from perdure.platform.stores.search_attributes import search_attributes_of
from perdure.tenants.client_errors import WorkflowNotFoundError

OPEN_STATUSES = ("running", "blocked")
# Batches a namespace may run at once: each is a workflow of the system namespace and a stream of
# requests into the namespace, which a tenant must not be able to multiply.
MAX_RUNNING_BATCHES = 10
# Batches ``list`` shows (the newest), finished ones included until the system namespace's retention.
LISTED = 200
CONFIRM_SECONDS = 30.0
LOOK_EVERY = 0.2
QUERY_TIMEOUT = 10.0


class BatchError(ValueError):
    """A batch request that cannot be done, said in one line (a bad query says where, under it)."""


class BatchNotFoundError(BatchError, LookupError):
    """No such batch in the namespace."""


class BatchExistsError(BatchError):
    """A start of a batch id the namespace has running already."""


class BatchLimitError(BatchError):
    """A start in a namespace that runs as many batches as it may."""


class BatchUnavailableError(BatchError):
    """The control plane did not do what was asked in time (or is not there): asking again may work."""


@dataclass(frozen=True)
class StartedBatch:
    workflow_id: str  # the batch's workflow, in the system namespace
    matching: int  # runs the query matched when it was checked


@contextlib.asynccontextmanager
async def system_ops(settings: Settings) -> AsyncIterator[OpsClient]:
    try:
        ops = await OpsClient.connect(settings, settings.system_namespace)
    except ControlError:
        raise BatchUnavailableError(
            "the control plane is not bootstrapped: run `perdure controlplane bootstrap --cell CELL`"
        ) from None
    async with ops:
        yield ops


async def start_batch(
    settings: Settings, definition: BatchDefinition, request_id: str | None = None
) -> StartedBatch:
    """Start the batch's workflow. Refused, with nothing started, for a namespace that does not exist
    (or is the system namespace), a query that does not parse against the namespace's search attributes
    or that no index serves in a namespace this large, a signal input over the namespace's payload
    limit, a batch id the namespace runs already, or a namespace that runs ``MAX_RUNNING_BATCHES``. The
    same ``request_id`` sent again (a retry) is the same start: answered with the batch it made."""
    request_id = request_id or str(uuid.uuid4())
    if definition.namespace == settings.system_namespace:
        raise BatchError("batches act on tenants' namespaces, not on the control plane's")
    async with system_ops(settings) as ops:
        record = await ops.databases.control.get_namespace(definition.namespace)
        if record.status == "deleted":
            raise BatchError(f"namespace {record.name!r} is deleted")
        store = ops.databases.runs(settings, record.cell)
        try:
            attributes = await search_attributes_of(ops.databases.control, record.name)
            query = parse_query(definition.query, attributes)
            matching = await run_search.count_runs(store, record.name, query)
        except QueryError as exc:
            raise BatchError(str(exc)) from None
        if definition.signal_input:
            payloads = default_converter.to_payloads(definition.signal_input, "signal input")
            size = sum(p.size for p in payloads)
            limit = min(record.quota.max_payload_bytes, MAX_SIGNAL_INPUT_BYTES)
            if size > limit:
                raise PayloadTooLargeError(size, limit, "signal input")
        workflow_id = batch_workflow_id(definition.namespace, definition.batch_id)
        made = fresh_run_id(ops.namespace.name, workflow_id, request_id)
        latest = await ops.store.latest_run(ops.namespace.name, workflow_id)
        if latest is not None and latest["_id"] == made:
            return StartedBatch(workflow_id, matching)  # this very request made it (a retry)
        if _is_open(latest) or (latest is not None and latest["status"] == "continued_as_new"):
            raise _exists(definition)
        running = len([run async for run in _batch_runs(ops, definition.namespace, OPEN_STATUSES)])
        if running >= MAX_RUNNING_BATCHES:
            raise BatchLimitError(
                f"namespace {definition.namespace!r} runs {running} batches, the most it may at once "
                f"({MAX_RUNNING_BATCHES}): wait for one to finish, or stop one"
            )
        await ops.start_workflow(
            BATCH, definition.model_dump(mode="json"), id=workflow_id, request_id=request_id
        )
        # The engine takes the start, or refuses it if another start of the same id won the race.
        deadline = asyncio.get_running_loop().time() + CONFIRM_SECONDS
        while await ops.store.run(made) is None:
            latest = await ops.store.latest_run(ops.namespace.name, workflow_id)
            if _is_open(latest) and latest is not None and latest["_id"] != made:
                raise _exists(definition)
            if asyncio.get_running_loop().time() > deadline:
                raise BatchUnavailableError(
                    f"the batch's workflow did not start within {CONFIRM_SECONDS:g} s: is the control "
                    f"cell {ops.namespace.cell!r} running?"
                )
            await asyncio.sleep(LOOK_EVERY)
        return StartedBatch(workflow_id, matching)


async def describe_batch(settings: Settings, namespace: str, batch_id: str) -> dict[str, Any]:
    """The batch as its workflow describes it (a running one answers its query; a finished one left its
    description as its result), with that workflow's id and status. A running batch that does not answer
    (its cell down) is described from what its workflow recorded: its definition and its progress as of
    its last page."""
    workflow_id = batch_workflow_id(namespace, checked_batch_id(batch_id))
    async with system_ops(settings) as ops:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_SECONDS
        while True:
            document = await ops.store.latest_run(ops.namespace.name, workflow_id)
            if document is None:
                raise BatchNotFoundError(f"no batch {batch_id!r} in namespace {namespace!r}")
            status = document["status"]
            described: dict[str, Any] | None = None
            if status == "completed":
                described = _result_of(document)
            elif _is_open(document):
                try:
                    answer = await ops.query(workflow_id, "describe", timeout=QUERY_TIMEOUT)
                except (WorkflowNotFoundError, ApplicationError, TimeoutError) as exc:
                    described = await _recorded(ops, document, f"not answering: {exc or type(exc).__name__}")
                else:
                    described = answer if isinstance(answer, dict) else None
            elif status != "continued_as_new":  # the batch's own workflow was terminated, or failed
                described = await _recorded(ops, document, f"its workflow {status}")
            if described is not None:
                described["workflow"] = f"{workflow_id} in {ops.namespace.name} ({status})"
                return described
            if loop.time() > deadline:
                raise BatchUnavailableError(f"batch {batch_id!r} did not answer within {CONFIRM_SECONDS:g} s")
            await asyncio.sleep(LOOK_EVERY)  # between two runs of its chain


async def list_batches(settings: Settings, namespace: str) -> list[dict[str, Any]]:
    """The namespace's batches, newest first (up to ``LISTED``): id, operation, state and counts, as
    their workflows last recorded them."""
    async with system_ops(settings) as ops:
        prefix = batches_prefix(namespace)
        seen: set[str] = set()
        listed: list[dict[str, Any]] = []
        async for run in _batch_runs(ops, namespace, (None,)):
            if run["workflow_id"] in seen:
                continue  # an older run of a chain that continued as new
            seen.add(run["workflow_id"])
            document = await ops.store.latest_run(ops.namespace.name, run["workflow_id"])
            if document is not None:
                listed.append(_listed(document, prefix))
            if len(listed) >= LISTED:
                break
        return listed


async def stop_batch(settings: Settings, namespace: str, batch_id: str, reason: str = "") -> dict[str, Any]:
    """Stop a running batch after the page it is on (the runs it reached stay as they are); returns its
    description once it has stopped. A batch that finished already is described as it is."""
    workflow_id = batch_workflow_id(namespace, checked_batch_id(batch_id))
    async with system_ops(settings) as ops:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_SECONDS
        sent_to: str | None = None
        while True:
            document = await ops.store.latest_run(ops.namespace.name, workflow_id)
            if document is None:
                raise BatchNotFoundError(f"no batch {batch_id!r} in namespace {namespace!r}")
            if not _is_open(document) and document["status"] != "continued_as_new":
                break
            if _is_open(document) and document["_id"] != sent_to:
                # Sent to each run of the chain met: one that reaches a run as it continues as new is lost.
                await ops.signal(workflow_id, "stop", reason or "stopped")
                sent_to = document["_id"]
            if loop.time() > deadline:
                raise BatchUnavailableError(
                    f"batch {batch_id!r} did not stop within {CONFIRM_SECONDS:g} s (is its cell running?)"
                )
            await asyncio.sleep(LOOK_EVERY)
    return await describe_batch(settings, namespace, batch_id)


async def _batch_runs(
    ops: OpsClient, namespace: str, statuses: tuple[str | None, ...]
) -> AsyncIterator[dict[str, Any]]:
    """The runs of the namespace's batch workflows with ``statuses`` (None: any), newest first."""
    prefix = batches_prefix(namespace)
    for status in statuses:
        after = None
        while True:
            page = await ops.store.list_page(
                ops.namespace.name,
                status=status,
                workflow_type=BATCH,
                workflow_id_prefix=prefix,
                after=after,
                limit=500,
            )
            for run in page:
                yield run
            if len(page) < 500:
                break
            after = (page[-1]["start_time"], page[-1]["_id"])


def _result_of(document: dict[str, Any]) -> dict[str, Any] | None:
    result = state_of(document).get("result")
    if result is None:
        return None
    described = default_converter.from_payload(Payload.model_validate(result))
    return described if isinstance(described, dict) else None


async def _recorded(ops: OpsClient, document: dict[str, Any], why: str) -> dict[str, Any]:
    """A batch described from its workflow's record: its definition (the run's input) and the progress
    it last showed (its search attributes)."""
    events = await ops.store.read_history(document["_id"], document)
    started = events[0] if events else None
    inputs = default_converter.from_payloads(getattr(started, "input", [])[:1])
    definition = inputs[0] if inputs and isinstance(inputs[0], dict) else {}
    attributes = state_of(document).get("search_attributes") or {}
    state = attributes.get("BatchState", "running")
    if document["status"] not in (*OPEN_STATUSES, "completed"):
        state = f"ended ({document['status']})"
    return {
        "batch": definition.get("batch_id"),
        "namespace": definition.get("namespace"),
        "operation": definition.get("operation"),
        "query": definition.get("query"),
        "reason": definition.get("reason", ""),
        "signal": definition.get("signal_name") or None,
        "rate": definition.get("rate"),
        "state": state,
        "stop_reason": None,
        "started_at": None,
        "finished_at": None,
        "counts": _counts(attributes),
        "last_error": "",
        "recent_failures": [],
        "note": f"as last recorded ({why})",
    }


def _counts(attributes: dict[str, Any]) -> dict[str, Any]:
    total = attributes.get("TotalEstimate")
    return {
        "total_estimate": total if isinstance(total, int) and total >= 0 else None,
        "succeeded": int(attributes.get("Succeeded") or 0),
        "failed": int(attributes.get("Failed") or 0),
        "skipped": int(attributes.get("Skipped") or 0),
    }


def _listed(document: dict[str, Any], prefix: str) -> dict[str, Any]:
    attributes = state_of(document).get("search_attributes") or {}
    state = attributes.get("BatchState", "running")
    if document["status"] not in (*OPEN_STATUSES, "completed", "continued_as_new"):
        state = f"ended ({document['status']})"
    return {
        "batch": str(document["workflow_id"]).removeprefix(prefix),
        "operation": attributes.get("Operation", "?"),
        "state": state,
        "counts": _counts(attributes),
        "started_at": attributes.get("StartedAt"),
    }


def _is_open(document: dict[str, Any] | None) -> bool:
    return document is not None and document["status"] in OPEN_STATUSES


def _exists(definition: BatchDefinition) -> BatchExistsError:
    return BatchExistsError(
        f"batch {definition.batch_id!r} is running in namespace {definition.namespace!r} (stop it, wait "
        "for it, or choose another id)"
    )
