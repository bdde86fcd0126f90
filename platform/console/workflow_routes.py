"""A namespace's workflows: the list of its runs (filtered, paged on an index), a run's page (summary,
timeline, pending work, history), its live updates, and the actions on runs (start, signal, query,
cancel, terminate).

Runs are read through the cell's ``RunStore``; actions go through the namespace's tenant client
(``ConsoleResources.client``), so admission decides on them as on a tenant's: the namespace's rate (each
action waits its turn in the fair queue), its concurrency quota, payload limit and status, the workflow
types its app registers, and whether a workflow id is running already. What the console can tell from
the form alone (bad JSON, a payload over the limit, an unknown type, a closed run) is refused before
anything is sent, with a message naming it; every action is audited, done or failed.

Live streams re-check their session every few seconds and before each update, and are capped per
session and per process.

A workflow id may hold any character, '/' included: links send each path segment percent-encoded
(``Links``) and these routes match the raw path segment by segment (``SegmentRoute``), so that a
workflow id can never be read as more of the path.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, get_args
from urllib.parse import quote, unquote, urlencode

from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from perdure.platform.console.access import NotVisible, Permission, allowed, can_see
from perdure.platform.console.console_errors import ConsoleInputError
from perdure.platform.console.console_page import ConsolePage, guarded
from perdure.platform.console.console_resources import (
    ADMISSION_WAIT_SECONDS,
    LiveStreamRefused,
    LiveStreamSlot,
)
from perdure.platform.console.payload_view import show_payload, show_payloads, show_value
from perdure.platform.console.run_timeline import (
    KIND_LABELS,
    build_timeline,
    format_clock,
    format_duration,
    format_time,
    waits_on,
)
from perdure.platform.core import history as h
from perdure.platform.core.definitions import UnknownWorkflowTypeError
from perdure.platform.core.errors import PerdureError
from perdure.platform.core.failures import ApplicationError
from perdure.platform.core.payloads import DataConverter, PayloadDecodeError, PayloadTooLargeError
from perdure.platform.core.run_state import OPEN_STATUSES, RunStatus
from perdure.platform.core.start_rules import fresh_run_id
from perdure.platform.protocol.ingress_wire import CANARY_WORKFLOW
from perdure.platform.stores.audit_log import Outcome
from perdure.platform.stores.control_store import ControlError, NamespaceRecord
from perdure.platform.stores.run_store import SEARCH_ATTRIBUTE_NAME, RunStore
from perdure.platform.stores.visibility import describe_run, list_entry
from perdure.tenants.client_errors import (
    AuthenticationError,
    MalformedRequestError,
    NamespaceSuspendedError,
    QuotaExceededError,
    ServiceUnavailableError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)

Document = dict[str, Any]

# The ingress protocol's limits, so that what the console sends a tenant's client could send too.
MAX_WORKFLOW_ID = 400
MAX_NAME = 200  # workflow types, signal and query names
MAX_REASON = 1000
MAX_FILTER = 400
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
STATUSES: tuple[str, ...] = get_args(RunStatus)
# A number of a query string: digits only (``str.isdigit`` takes '²' too, which ``int`` refuses), and
# few of them (``int`` refuses more than 4,300).
_NUMBER = re.compile(r"[0-9]{1,9}")
# A start is answered once its run is written; should the run store lag behind, how long the start
# waits for the run to show before answering (then its page can be shown).
START_WAIT = 5.0
# Live updates: how often the run is read, and how long one stream lasts before the browser reconnects
# (each connection is a new request, its session checked again).
POLL_SECONDS = 0.5
MAX_STREAM_SECONDS = 600.0
PING_SECONDS = 15
# While a stream is open its session and identity are checked again every this many polls (and before
# each update is sent): signing out, or losing access, ends the streams already open.
RECHECK_POLLS = 5
SIGNED_OUT = "signed-out"
# A run may have 51,200 events: the page shows the newest of them.
MAX_TIMELINE_ITEMS = 500
MAX_RAW_EVENTS = 1000


# -- routes on the raw path ----------------------------------------------------------------------------
class SegmentRoute(Route):
    """A route matched on the raw (still percent-encoded) path, one segment per parameter: a workflow id
    holding '/' is sent as %2F, which a route on the decoded path would take for a separator."""

    def __init__(
        self, path: str, endpoint: Callable[[Request], Awaitable[Response]], *, methods: list[str]
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.segments = tuple(path.strip("/").split("/"))

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        params = _match(self.segments, _raw_segments(scope))
        if params is None:
            return Match.NONE, {}
        child_scope = {"endpoint": self.endpoint, "path_params": {**scope.get("path_params", {}), **params}}
        if self.methods and scope["method"] not in self.methods:
            return Match.PARTIAL, child_scope
        return Match.FULL, child_scope


def _raw_segments(scope: Scope) -> list[str] | None:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(scope["path"])
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    try:
        return [unquote(part, errors="strict") for part in path.split("/")[1:]]
    except UnicodeDecodeError:
        return None


def _match(pattern: tuple[str, ...], segments: list[str] | None) -> dict[str, str] | None:
    if segments is None or len(segments) != len(pattern):
        return None
    params: dict[str, str] = {}
    for expected, segment in zip(pattern, segments, strict=True):
        if expected.startswith("{") and expected.endswith("}"):
            if not segment:
                return None
            params[expected[1:-1]] = segment
        elif segment != expected:
            return None
    return params


def _segment(value: str) -> str:
    encoded = quote(value, safe="")
    # A segment of dots alone would be resolved away by the browser.
    return encoded.replace(".", "%2E") if set(value) == {"."} else encoded


@dataclass(frozen=True)
class Links:
    """The console's URLs of a namespace's workflows, each segment encoded."""

    namespace: str

    @property
    def base(self) -> str:
        return f"/namespaces/{_segment(self.namespace)}/workflows"

    def workflows(self, **query: str) -> str:
        shown = {k: v for k, v in query.items() if v}
        return f"{self.base}?{urlencode(shown)}" if shown else self.base

    def workflow(self, workflow_id: str) -> str:
        return f"{self.base}/{_segment(workflow_id)}"

    def run(self, workflow_id: str, run_id: str) -> str:
        return f"{self.workflow(workflow_id)}/runs/{_segment(run_id)}"

    def live(self, workflow_id: str, run_id: str, seen: int, status: str) -> str:
        return f"{self.run(workflow_id, run_id)}/live?{urlencode({'seen': seen, 'status': status})}"

    def action(self, workflow_id: str, action: str) -> str:
        return f"{self.workflow(workflow_id)}/{action}"


class Show:
    """What the templates call to show values: plain text all of it, escaped by the templates."""

    payload = staticmethod(show_payload)
    payloads = staticmethod(show_payloads)
    value = staticmethod(show_value)
    time = staticmethod(format_time)
    duration = staticmethod(format_duration)
    clock = staticmethod(format_clock)
    kinds = KIND_LABELS


# -- input ------------------------------------------------------------------------------------------
def _name(raw: str, what: str, limit: int = MAX_NAME) -> str:
    if not raw.strip():
        raise ConsoleInputError(f"the {what} is empty")
    if len(raw) > limit:
        raise ConsoleInputError(f"the {what} is {len(raw)} characters long, over the limit of {limit}")
    return raw


def _reason(raw: str, *, required: bool) -> str:
    if required and not raw.strip():
        raise ConsoleInputError("a reason is required: it is recorded in the run's history")
    if len(raw) > MAX_REASON:
        raise ConsoleInputError(f"the reason is {len(raw)} characters long, over the limit of {MAX_REASON}")
    return raw


def _not_a_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _arguments(raw: str, what: str, record: NamespaceRecord) -> list[Any]:
    """The JSON of a form (one argument, or a list of them, as the CLI's ``--input``), held to the
    namespace's payload limit."""
    if not raw.strip():
        return []
    try:
        value = json.loads(raw, parse_constant=_not_a_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ConsoleInputError(f"the {what} is not JSON: {exc.msg} at {where}") from None
    except ValueError as exc:
        raise ConsoleInputError(f"the {what} is not JSON: {exc}") from None
    except RecursionError:
        raise ConsoleInputError(f"the {what} is nested too deeply") from None
    arguments = value if isinstance(value, list) else [value]
    limit = record.quota.max_payload_bytes
    try:
        DataConverter(max_payload_bytes=limit).to_payloads(arguments, what)
    except PayloadTooLargeError as exc:
        raise ConsoleInputError(f"{exc} (the namespace's payload limit)", 413) from None
    return arguments


def _moment(raw: str, what: str) -> datetime | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ConsoleInputError(f"{what} {raw!r} is no time: write it as 2026-12-01T09:30 (UTC)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _attribute_values(raw: str) -> list[Any]:
    """What ``name=value`` matches: the text, and the JSON scalar it spells (5, 2.5, true) if any."""
    values: list[Any] = [raw]
    try:
        scalar = json.loads(raw)
    except ValueError:
        return values
    if isinstance(scalar, bool | int | float) and math.isfinite(scalar):
        values.append(scalar)
    return values


@dataclass(frozen=True)
class RunFilters:
    """The list's filters as typed (to fill the form again) and as the store takes them."""

    status: str = ""
    type: str = ""
    id: str = ""
    started_from: str = ""
    started_to: str = ""
    attribute: str = ""
    size: int = PAGE_SIZE
    query: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: QueryParams) -> RunFilters:
        typed = {
            key: params.get(key, "").strip() for key in ("status", "type", "id", "from", "to", "attribute")
        }
        for key, value in typed.items():
            if len(value) > MAX_FILTER:
                raise ConsoleInputError(f"the filter {key} is over {MAX_FILTER} characters long")
        status = typed["status"]
        if status and status not in STATUSES:
            raise ConsoleInputError(f"{status!r} is no run status (one of {', '.join(STATUSES)})")
        query: dict[str, Any] = {
            "status": status or None,
            "workflow_type": typed["type"] or None,
            "workflow_id_prefix": typed["id"] or None,
            "started_from": _moment(typed["from"], "from"),
            "started_to": _moment(typed["to"], "to"),
        }
        if typed["attribute"]:
            name, equals, value = typed["attribute"].partition("=")
            name = name.strip()
            if not equals or not SEARCH_ATTRIBUTE_NAME.match(name):
                raise ConsoleInputError(
                    "a search attribute filter is name=value, the name letters, digits and '_' "
                    "(e.g. CustomerId=c-42)"
                )
            query["search_attribute"] = (name, _attribute_values(value.strip()))
        size_text = params.get("size", "")
        if size_text and not (_NUMBER.fullmatch(size_text) and 1 <= int(size_text) <= MAX_PAGE_SIZE):
            raise ConsoleInputError(f"the page size is a number from 1 to {MAX_PAGE_SIZE}")
        return cls(
            status=status,
            type=typed["type"],
            id=typed["id"],
            started_from=typed["from"],
            started_to=typed["to"],
            attribute=typed["attribute"],
            size=int(size_text) if size_text else PAGE_SIZE,
            query=query,
        )

    def as_params(self) -> dict[str, str]:
        """The filters as the list's URL carries them."""
        return {
            "status": self.status,
            "type": self.type,
            "id": self.id,
            "from": self.started_from,
            "to": self.started_to,
            "attribute": self.attribute,
            "size": str(self.size) if self.size != PAGE_SIZE else "",
        }


def _cursor(params: QueryParams) -> tuple[datetime, str] | None:
    """Where a page starts: after the previous page's last run (its start time and run id)."""
    moment, run_id = params.get("after_time", ""), params.get("after_run", "")
    if not moment and not run_id:
        return None
    parsed = _moment(moment, "after_time")
    if parsed is None or not run_id or len(run_id) > MAX_NAME:
        raise ConsoleInputError("the page link is damaged: go back to the first page")
    return parsed, run_id


# -- reading runs -----------------------------------------------------------------------------------
async def _namespace(page: ConsolePage, action: str | None = None) -> NamespaceRecord:
    name = page.request.path_params["namespace"]
    try:
        return await page.namespace(name)
    except NotVisible:
        if action is not None:
            await page.audit(action, "refused", detail=f"no namespace {name!r} visible to {page.actor}")
        raise


def _store(page: ConsolePage, record: NamespaceRecord) -> RunStore:
    return page.resources.databases.runs(page.resources.settings, record.cell)


async def _run_of(store: RunStore, record: NamespaceRecord, workflow_id: str, run_id: str) -> Document:
    document = await store.run(run_id)
    # Run ids are global to the cell: one of another namespace's runs is no run of this one.
    if (
        document is None
        or document.get("namespace") != record.name
        or document.get("workflow_id") != workflow_id
    ):
        raise HTTPException(404, f"no run {run_id} of workflow {workflow_id!r} in namespace {record.name}")
    return document


async def _latest_of(store: RunStore, record: NamespaceRecord, workflow_id: str) -> Document:
    document = await store.latest_run(record.name, workflow_id)
    if document is None:
        raise HTTPException(404, f"no workflow {workflow_id!r} in namespace {record.name}")
    return document


def _run_context(
    record: NamespaceRecord, document: Document, events: list[h.HistoryEvent], now: datetime
) -> dict[str, Any]:
    """What the live part of a run's page shows (``run_live.html``), for the page and its updates alike."""
    timeline = build_timeline(events, now)
    run = describe_run(document)
    items, hidden = timeline.latest(MAX_TIMELINE_ITEMS)
    end = run["close_time"] or now
    raw_events = events[-MAX_RAW_EVENTS:]
    return {
        "raw_events": [(e, e.model_dump_json(indent=2)) for e in raw_events],
        "hidden_events": len(events) - len(raw_events),
        "record": record,
        "run": run,
        "timeline": timeline,
        "items": items,
        "hidden_items": hidden,
        "run_duration": end - run["start_time"] if run["start_time"] else None,
        "waits_on": waits_on(timeline, run["status"], now, run["blocked_reason"]),
        "links": Links(record.name),
        "show": Show,
        "now": now,
    }


async def _show_run(
    page: ConsolePage,
    record: NamespaceRecord,
    store: RunStore,
    document: Document,
    *,
    status: int = 200,
    query: dict[str, Any] | None = None,
) -> Response:
    events = await store.read_history(document["_id"], document)
    context = _run_context(record, document, events, datetime.now(UTC))
    latest = await store.latest_run(record.name, document["workflow_id"])
    is_latest = latest is not None and latest["_id"] == document["_id"]
    is_open = document["status"] in OPEN_STATUSES
    links: Links = context["links"]
    return page.render(
        "run.html",
        status=status,
        **context,
        is_latest=is_latest,
        is_open=is_open,
        latest_run_id=latest["_id"] if latest is not None else None,
        live_url=(
            links.live(
                document["workflow_id"], document["_id"], document["next_event_id"], document["status"]
            )
            if is_open
            else None
        ),
        query=query,
    )


# -- pages ------------------------------------------------------------------------------------------
@guarded(Permission.READ)
async def workflows(page: ConsolePage) -> Response:
    record = await _namespace(page)
    params = page.request.query_params
    filters = RunFilters.parse(params)
    after = _cursor(params)
    found = await _store(page, record).list_page(
        record.name, **filters.query, after=after, limit=filters.size + 1
    )
    rows = [list_entry(d) for d in found[: filters.size]]
    links = Links(record.name)
    next_url = None
    if len(found) > filters.size:
        last = rows[-1]
        next_url = links.workflows(
            **filters.as_params(), after_time=last["start_time"].isoformat(), after_run=last["run_id"]
        )
    started = params.get("started", "")
    return page.render(
        "workflows.html",
        record=record,
        rows=rows,
        filters=filters,
        statuses=STATUSES,
        links=links,
        show=Show,
        next_url=next_url,
        first_url=links.workflows(**filters.as_params()) if after is not None else None,
        started=started[:MAX_WORKFLOW_ID],
    )


@guarded(Permission.READ)
async def latest_run(page: ConsolePage) -> Response:
    record = await _namespace(page)
    store = _store(page, record)
    document = await _latest_of(store, record, page.request.path_params["workflow_id"])
    return await _show_run(page, record, store, document)


@guarded(Permission.READ)
async def run(page: ConsolePage) -> Response:
    record = await _namespace(page)
    store = _store(page, record)
    path = page.request.path_params
    document = await _run_of(store, record, path["workflow_id"], path["run_id"])
    return await _show_run(page, record, store, document)


@guarded(Permission.READ)
async def live(page: ConsolePage) -> Response:
    """Server-sent events: the run's summary, timeline and pending work again (``update``) whenever its
    history grows or its status changes, until it closes (``end``), the browser goes, or the session
    ends or loses sight of the namespace (``end`` with ``signed-out``)."""
    record = await _namespace(page)
    store = _store(page, record)
    path = page.request.path_params
    document = await _run_of(store, record, path["workflow_id"], path["run_id"])
    seen_text = page.request.query_params.get("seen", "")
    # A damaged count is no reason to refuse: the stream then sends the run as it is at once.
    seen = (
        (int(seen_text) if _NUMBER.fullmatch(seen_text) else 0),
        page.request.query_params.get("status", ""),
    )
    template = page.resources.templates.get_template("run_live.html")
    try:
        slot = page.resources.live_streams.open(page.session.id)
    except LiveStreamRefused as exc:
        # Plain text: EventSource shows no body, and does not reconnect after a status other than 200.
        return PlainTextResponse(exc.message, status_code=429, headers={"Retry-After": "30"})

    async def updates() -> AsyncIterator[ServerSentEvent]:
        try:
            current, shown = document, seen
            loop = asyncio.get_running_loop()
            deadline = loop.time() + MAX_STREAM_SECONDS
            polls, checked = 0, True  # ``guarded`` has just checked the session
            while True:
                state = (current["next_event_id"], current["status"])
                if state != shown:
                    # Nothing new is shown to a session that ended meanwhile, however recently checked.
                    if not checked and not await _still_allowed(page, record.name):
                        yield ServerSentEvent(data=SIGNED_OUT, event="end")
                        return
                    events = await store.read_history(current["_id"], current)
                    context = _run_context(record, current, events, datetime.now(UTC))
                    yield ServerSentEvent(data=template.render(context), event="update")
                    shown = state
                if current["status"] not in OPEN_STATUSES:
                    yield ServerSentEvent(data=current["status"], event="end")
                    return
                if loop.time() >= deadline:
                    return  # the browser connects again, as a new request
                await asyncio.sleep(POLL_SECONDS)
                polls, checked = polls + 1, False
                if polls >= RECHECK_POLLS:
                    if not await _still_allowed(page, record.name):
                        yield ServerSentEvent(data=SIGNED_OUT, event="end")
                        return
                    polls, checked = 0, True
                latest = await store.run(current["_id"])
                if latest is None:
                    return  # purged (its namespace deleted): nothing more to follow
                current = latest
        finally:
            slot.release()

    return _LiveResponse(slot, updates(), ping=PING_SECONDS)


class _LiveResponse(EventSourceResponse):
    """A live stream that gives its slot back however it ends: its generator releases it when it
    finishes or is closed, and this when the response ends without the generator having run."""

    def __init__(self, slot: LiveStreamSlot, content: AsyncIterator[ServerSentEvent], *, ping: int) -> None:
        super().__init__(content, ping=ping)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


async def _still_allowed(page: ConsolePage, namespace: str) -> bool:
    """Whether the stream's session is still open, its identity still there (its password set) and
    still one that may see the namespace: what ``guarded`` and ``_namespace`` checked when it opened."""
    resources = page.resources
    session = await resources.sessions.find(page.session.id)
    if session is None:
        return False
    identity = await resources.credentials.current(session.identity)
    if identity is None:
        await resources.sessions.close(session.id)  # as ``guarded`` does at the next request
        return False
    if not allowed(identity, Permission.READ):
        return False
    try:
        record = await resources.databases.control.get_namespace(namespace)
    except ControlError:
        return False
    return can_see(identity, record)


# -- actions ----------------------------------------------------------------------------------------
@dataclass
class AuditEntry:
    """What an action records once it ends: its target, and what it did or why it failed."""

    target: str | None
    detail: str = ""
    outcome: Outcome = "done"


@asynccontextmanager
async def _audited(
    page: ConsolePage, action: str, record: NamespaceRecord, target: str | None = None
) -> AsyncIterator[AuditEntry]:
    entry = AuditEntry(target)
    try:
        yield entry
    except (ConsoleInputError, HTTPException) as exc:
        detail = exc.message if isinstance(exc, ConsoleInputError) else str(exc.detail)
        await page.audit(action, "failed", namespace=record.name, target=entry.target, detail=detail)
        raise
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        await page.audit(action, "failed", namespace=record.name, target=entry.target, detail=detail)
        raise
    await page.audit(action, entry.outcome, namespace=record.name, target=entry.target, detail=entry.detail)


async def _open_run(
    page: ConsolePage, store: RunStore, record: NamespaceRecord, workflow_id: str
) -> Document:
    """The workflow's latest run, open and the one the form was shown for. The tenant client's handle
    steers the latest run of a workflow id (its requests carry no run id), so this is what keeps a form
    of an earlier run from acting on a later one; a run that changes between this check and admission
    is the one window left."""
    document = await store.latest_run(record.name, workflow_id)
    if document is None:
        raise ConsoleInputError(f"no workflow {workflow_id!r} in namespace {record.name}", 404)
    shown = page.field("run_id")
    if shown and shown != document["_id"]:
        raise ConsoleInputError(
            f"run {shown} is no longer the workflow's latest run ({document['_id']} is): nothing was sent",
            409,
        )
    if document["status"] not in OPEN_STATUSES:
        raise ConsoleInputError(
            f"workflow {workflow_id!r} has no open run (its latest run is {document['status']})", 409
        )
    return document


def _refusal(
    exc: BaseException, record: NamespaceRecord, what: str, unanswered: str
) -> ConsoleInputError | None:
    """How the page tells a client error of ``what`` (e.g. "the start"): what admission or the engine
    said, with the status that fits; None for an error that is no answer of theirs (a 500, audited)."""
    if isinstance(exc, UnknownWorkflowTypeError):
        return ConsoleInputError(f"{exc} (namespace {record.name}): nothing was started")
    if isinstance(exc, PayloadTooLargeError):
        return ConsoleInputError(f"{exc} (the namespace's payload limit): nothing was sent", 413)
    if isinstance(exc, QuotaExceededError):
        return ConsoleInputError(f"{exc} (the namespace's concurrency quota): nothing was started", 429)
    if isinstance(exc, WorkflowAlreadyStartedError):
        return ConsoleInputError(f"{exc}: nothing was started", 409)
    if isinstance(exc, NamespaceSuspendedError):
        return ConsoleInputError(f"{exc}: nothing was sent", 409)
    if isinstance(exc, WorkflowNotFoundError):
        return ConsoleInputError(f"{exc}: nothing was sent", 404)
    if isinstance(exc, AuthenticationError):
        return ConsoleInputError(f"the console may not use namespace {record.name}'s vhost: {exc}", 503)
    if isinstance(exc, ServiceUnavailableError | TimeoutError):
        # The request stays in the namespace's ingress queue, durable: admission takes it in its turn.
        return ConsoleInputError(
            f"admission did not take {what} within {ADMISSION_WAIT_SECONDS:g} s: namespace {record.name} "
            f"is at its action rate (actions wait their turn) or its broker is unreachable. {unanswered}",
            503,
        )
    if isinstance(exc, MalformedRequestError):
        return ConsoleInputError(f"admission could not read {what}: {exc}", 502)
    return None


@asynccontextmanager
async def _through_admission(record: NamespaceRecord, what: str, unanswered: str) -> AsyncIterator[None]:
    """Bounds an action sent through the namespace's client by ``ADMISSION_WAIT_SECONDS`` (a browser
    waits on it), and turns the client's errors into the page's answers."""
    try:
        async with asyncio.timeout(ADMISSION_WAIT_SECONDS):
            yield
    except (PerdureError, TimeoutError) as exc:
        refusal = _refusal(exc, record, what, unanswered)
        if refusal is None:
            raise
        raise refusal from None


@guarded(Permission.OPERATE_RUNS, action="workflow.start")
async def start(page: ConsolePage) -> Response:
    record = await _namespace(page, "workflow.start")
    store = _store(page, record)
    async with _audited(page, "workflow.start", record) as entry:
        workflow_id = _name(page.field("workflow_id"), "workflow id", MAX_WORKFLOW_ID)
        entry.target = workflow_id
        workflow_type = _name(page.field("workflow_type"), "workflow type")
        # Checked here too (admission checks again, on its own copy of the namespace, refreshed every few
        # seconds): the page names the namespace's types, and a refusal that cannot be mistaken for a
        # race is not sent to the tenant's dead-letter queue.
        known = record.workflow_types
        if known and workflow_type not in known and workflow_type != CANARY_WORKFLOW:
            raise ConsoleInputError(
                f"unknown workflow type {workflow_type!r}; this namespace's app registers: "
                f"{', '.join(sorted(known))}"
            )
        arguments = _arguments(page.field("args"), "workflow input", record)
        if record.status == "suspended":
            raise ConsoleInputError(f"namespace {record.name} is suspended: it takes no new work", 409)
        # Whether the id is running already and whether the namespace may run one more are left to the
        # engine and admission: they decide atomically, a count or a look here would race other starts.
        request_id = str(uuid.uuid4())
        run_id = fresh_run_id(record.name, workflow_id, request_id)
        unanswered = f"The start may still be taken later (request {request_id}, run {run_id})."
        async with _through_admission(record, "the start", unanswered):
            client = await page.resources.client(record)
            handle = await client.start_workflow(
                workflow_type, *arguments, id=workflow_id, request_id=request_id
            )
        run_id = handle.run_id or run_id
        entry.detail = f"started {workflow_type} (request {request_id}, run {run_id})"
    links = Links(record.name)
    if await _appears(store, run_id):
        return RedirectResponse(links.run(workflow_id, run_id), status_code=303)
    return RedirectResponse(links.workflows(id=workflow_id, started=workflow_id), status_code=303)


async def _appears(store: RunStore, run_id: str) -> bool:
    """Whether the run is written within ``START_WAIT`` (its page can then be shown at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_WAIT
    while loop.time() < deadline:
        if await store.run(run_id) is not None:
            return True
        await asyncio.sleep(0.1)
    return False


# What the page says of a signal, cancel or terminate admission did not take in time.
_STILL_QUEUED = "It stays in the namespace's queue and may still reach the run."


# What a steering form asks of the run's handle, and how the audit log tells it (given the run's id).
Steering = tuple[Callable[[Any], Awaitable[None]], Callable[[str], str]]


async def _steer(
    page: ConsolePage, action: str, read_form: Callable[[NamespaceRecord], Steering]
) -> Response:
    """A signal, cancel or terminate of the workflow's open run shown on the page: the form checked,
    then the request through admission, audited, and back to the run's page."""
    record = await _namespace(page, action)
    workflow_id = page.request.path_params["workflow_id"]
    store = _store(page, record)
    async with _audited(page, action, record, workflow_id) as entry:
        send, described = read_form(record)
        document = await _open_run(page, store, record, workflow_id)
        async with _through_admission(record, f"the {action.removeprefix('workflow.')}", _STILL_QUEUED):
            await send((await page.resources.client(record)).get_workflow_handle(workflow_id))
        entry.detail = described(document["_id"])
    return RedirectResponse(Links(record.name).run(workflow_id, document["_id"]), status_code=303)


@guarded(Permission.OPERATE_RUNS, action="workflow.signal")
async def signal(page: ConsolePage) -> Response:
    def read_form(record: NamespaceRecord) -> Steering:
        name = _name(page.field("name"), "signal name")
        arguments = _arguments(page.field("args"), "signal input", record)
        return (lambda handle: handle.signal(name, *arguments)), lambda run: f"signal {name} to run {run}"

    return await _steer(page, "workflow.signal", read_form)


@guarded(Permission.OPERATE_RUNS, action="workflow.cancel")
async def cancel(page: ConsolePage) -> Response:
    def read_form(record: NamespaceRecord) -> Steering:
        reason = _reason(page.field("reason"), required=False)
        said = f": {reason}" if reason else ""
        return (lambda handle: handle.cancel(reason)), lambda run: f"cancel run {run}{said}"

    return await _steer(page, "workflow.cancel", read_form)


@guarded(Permission.OPERATE_RUNS, action="workflow.terminate")
async def terminate(page: ConsolePage) -> Response:
    def read_form(record: NamespaceRecord) -> Steering:
        reason = _reason(page.field("reason"), required=True)
        return (lambda handle: handle.terminate(reason)), lambda run: f"terminate run {run}: {reason}"

    return await _steer(page, "workflow.terminate", read_form)


@guarded(Permission.OPERATE_RUNS, action="workflow.query")
async def query(page: ConsolePage) -> Response:
    """Ask the workflow's latest run (open or closed: a closed run is replayed by a worker); the answer
    or why there is none is shown on its page."""
    record = await _namespace(page, "workflow.query")
    workflow_id = page.request.path_params["workflow_id"]
    store = _store(page, record)
    async with _audited(page, "workflow.query", record, workflow_id) as entry:
        name = _name(page.field("name"), "query name")
        raw_arguments = page.field("args")
        arguments = _arguments(raw_arguments, "query input", record)
        document = await store.latest_run(record.name, workflow_id)
        if document is None:
            raise ConsoleInputError(f"no workflow {workflow_id!r} in namespace {record.name}", 404)
        shown: dict[str, Any] = {"name": name, "args": raw_arguments, "answer": None, "error": None}
        status = 200
        async with _through_admission(record, "the query", ""):
            handle = (await page.resources.client(record)).get_workflow_handle(workflow_id)
        try:
            # A query is an action as a tenant's is: it waits its turn at the namespace's rate.
            async with asyncio.timeout(ADMISSION_WAIT_SECONDS):
                answer = await handle.query(name, *arguments)
        except ApplicationError as exc:
            shown["error"], status = f"the query failed: {exc}", 422
        except (TimeoutError, ServiceUnavailableError):
            shown["error"] = (
                f"no answer within {ADMISSION_WAIT_SECONDS:g} s: is a worker of the namespace running? "
                "(A query also waits its turn while the namespace is at its action rate.)"
            )
            status = 504
        except PayloadDecodeError as exc:
            shown["error"], status = f"the answer came but cannot be shown: {exc}", 502
        except PerdureError as exc:
            refusal = _refusal(exc, record, "the query", "")
            if refusal is None:
                raise
            raise refusal from None
        else:
            shown["answer"] = show_value(answer)
        entry.outcome = "done" if shown["error"] is None else "failed"
        entry.detail = f"query {name} of run {document['_id']}" + (
            f": {shown['error']}" if shown["error"] else ""
        )
    return await _show_run(page, record, store, document, status=status, query=shown)


_WORKFLOW = "/namespaces/{namespace}/workflows/{workflow_id}"
routes: list[BaseRoute] = [
    SegmentRoute("/namespaces/{namespace}/workflows", workflows, methods=["GET"]),
    SegmentRoute("/namespaces/{namespace}/workflows", start, methods=["POST"]),
    SegmentRoute(_WORKFLOW, latest_run, methods=["GET"]),
    SegmentRoute(_WORKFLOW + "/runs/{run_id}", run, methods=["GET"]),
    SegmentRoute(_WORKFLOW + "/runs/{run_id}/live", live, methods=["GET"]),
    SegmentRoute(_WORKFLOW + "/signal", signal, methods=["POST"]),
    SegmentRoute(_WORKFLOW + "/query", query, methods=["POST"]),
    SegmentRoute(_WORKFLOW + "/cancel", cancel, methods=["POST"]),
    SegmentRoute(_WORKFLOW + "/terminate", terminate, methods=["POST"]),
]
