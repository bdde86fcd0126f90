"""What a batch operation does to the world, for the ``Batch`` workflow: count the runs its query
matches, select the next page of them, and terminate, cancel or signal a page.

Selection reads the target namespace's runs with the visibility query (``platform/stores/run_search``),
newest first in keyset order (start time, run id) after the cursor the workflow recorded, so no page
holds a run another page held. The requests go in through the namespace's own ingress and admission, as
a tenant's own would (the tenant ``Client`` on the platform's AMQP URL at the namespace's vhost): the
namespace's rate limit and suspension apply and each is metered as the namespace's request. Each names
its run and carries a request id of the batch's and the run's, so an attempt sent again after a crash is
the same request: the engine takes a signal once by its id, and a terminate or a cancel once by nature.

What became of each run is read back from the run itself, not from what was sent: a run closed (or,
for a cancel, cancelled already) before the batch reached it is skipped, one that shows the batch's
request succeeded. So an attempt retried after its first sent some of a page's requests counts those
runs as the first would have."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from perdure.platform.control.control_app import control_app
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.core import history as h
from perdure.platform.core.failures import ApplicationError
from perdure.platform.core.payloads import PayloadTooLargeError
from perdure.platform.core.visibility_query import QueryError, VisibilityQuery, parse_query
from perdure.platform.protocol.batch_wire import (
    BatchDefinition,
    PageOutcome,
    RunResult,
    SelectedRun,
    batch_request_id,
)
from perdure.platform.protocol.ingress_wire import CancelRequest, SignalRequest, SignalSpec
from perdure.platform.stores import run_search
from perdure.platform.stores.control_store import ControlError, NamespaceRecord
from perdure.platform.stores.run_bodies import state_of
from perdure.platform.stores.run_store import RunStore
from perdure.platform.stores.search_attributes import search_attributes_of
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url
from perdure.tenants import (
    AuthenticationError,
    Client,
    MalformedRequestError,
    NamespaceSuspendedError,
    QuotaExceededError,
    WorkflowNotFoundError,
    activity,
)

log = logging.getLogger(__name__)
OPEN_STATUSES = ("running", "blocked")
HEARTBEAT_EVERY = 1.0
# Requests of a page in flight at once (each waits for admission's answer); they leave at the batch's rate.
SENDS_AT_ONCE = 32
# How long a page waits for its runs to show the batch's requests (the engine applies them within
# milliseconds when the cell keeps up), and how often it looks.
EFFECT_SECONDS = 30.0
LOOK_EVERY = 0.1
# How far the cells' clocks may be behind the control plane's: a run terminated this long before the
# page began was not terminated by the batch, whatever the reason it carries.
CLOCK_SKEW = timedelta(seconds=1)
# What a run's document is read for here (not its history, outbox or tail).
_PROJECTION = {
    "namespace": 1,
    "workflow_id": 1,
    "status": 1,
    "state": 1,  # opaque to the database (run_bodies.py): read whole
}


class BatchActivities:
    """What batches do, on the process's control-plane connections and one tenant client per namespace
    vhost (opened on first use and kept)."""

    def __init__(self, resources: ControlResources) -> None:
        self.resources = resources
        self._clients: dict[str, Client] = {}
        self._opening = asyncio.Lock()

    @control_app.activity
    async def count_batch_runs(self, namespace: str, query: str) -> int:
        """How many runs of ``namespace`` the query matches now (the batch's estimate of its total)."""
        async with _beating():
            record = await self._record(namespace)
            store = self.resources.runs(record.cell)
            parsed = await self._parsed(record, query)
            try:
                return await run_search.count_runs(store, namespace, parsed)
            except QueryError as exc:
                raise _refused(exc) from None

    @control_app.activity
    async def select_batch_runs(
        self,
        namespace: str,
        query: str,
        after_time: datetime | None,
        after_run_id: str | None,
        limit: int,
    ) -> list[SelectedRun]:
        """The next ``limit`` runs the query matches, newest first, after the cursor (none: from the
        newest)."""
        async with _beating():
            record = await self._record(namespace)
            after = (
                (after_time, after_run_id) if after_time is not None and after_run_id is not None else None
            )
            return await self._select(record, query, after, limit)

    async def _select(
        self, record: NamespaceRecord, query: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[SelectedRun]:
        store = self.resources.runs(record.cell)
        parsed = await self._parsed(record, query)
        try:
            found = await run_search.matching_runs(store, record.name, parsed, after=after, limit=limit)
        except QueryError as exc:
            raise _refused(exc) from None
        return [
            SelectedRun(
                run_id=str(run["_id"]),
                workflow_id=str(run["workflow_id"]),
                start_time=run["start_time"],
                status=str(run["status"]),
            )
            for run in found
        ]

    @control_app.activity
    async def apply_batch_page(
        self,
        definition: BatchDefinition,
        chain: str,
        runs: list[SelectedRun],
        next_limit: int,
        began: datetime,
    ) -> PageOutcome:
        """Terminate, cancel or signal each of ``runs`` (a page the batch selected), at the batch's rate
        from ``began`` (when the batch took the page up: the n-th request leaves no sooner than n / rate
        after it), and say what became of each: succeeded once the run shows the request, skipped if it
        was closed before, failed with why (refused by admission, the run gone). ``chain`` (the batch's
        first run id) names the requests. Then select the page after this one (up to ``next_limit``
        runs): it is recorded with these results, before anything is sent to it, and saves the batch a
        round of its own per page."""
        marked = _Marked(definition, chain, began)
        async with _beating():
            # A namespace deleted meanwhile fails the batch (non-retryable), with why as its last error:
            # counting this page failed and selecting no next would end it as "completed".
            record = await self._record(definition.namespace)
            store = self.resources.runs(record.cell)
            results: dict[str, RunResult] = {}
            waiting: list[SelectedRun] = []
            documents = await _documents(store, [run.run_id for run in runs])
            for run in runs:
                verdict = await _verdict(marked, store, documents.get(run.run_id), sent=False)
                if verdict is None:
                    waiting.append(run)
                else:
                    results[run.run_id] = _result(run, *verdict)
            if waiting:
                refused = await self._send(record, marked, waiting, began)
                results.update({run.run_id: refused[run.run_id] for run in waiting if run.run_id in refused})
                pending = [run for run in waiting if run.run_id not in refused]
                results.update(await _await_effects(marked, store, pending))
            following: list[SelectedRun] = []
            if runs and next_limit > 0:
                last = min(runs, key=lambda run: (run.start_time, run.run_id))
                following = await self._select(
                    record, definition.query, (last.start_time, last.run_id), next_limit
                )
            return PageOutcome(results=[results[run.run_id] for run in runs], next_page=following)

    async def _send(
        self, record: NamespaceRecord, marked: _Marked, runs: list[SelectedRun], began: datetime
    ) -> dict[str, RunResult]:
        """Send the batch's request to each run through the namespace's ingress; returns the refused
        ones (a refusal names the run's problem, not a passing one: a silence raises, and the attempt is
        retried)."""
        try:
            client = await self._client(record)
        except AuthenticationError as exc:  # its vhost is gone
            return {
                run.run_id: _result(run, "failed", f"the namespace's vhost refused: {exc}") for run in runs
            }
        definition = marked.definition
        signal = None
        if definition.operation == "signal":
            signal = SignalSpec(
                name=definition.signal_name,
                input=client.converter.to_payloads(definition.signal_input, "signal input"),
            )
        refused: dict[str, RunResult] = {}
        gate = asyncio.Semaphore(SENDS_AT_ONCE)

        async def send(run: SelectedRun) -> None:
            request: SignalRequest | CancelRequest
            request_id = marked.request_id(run.run_id)
            if signal is not None:
                request = SignalRequest(
                    request_id=request_id, workflow_id=run.workflow_id, run_id=run.run_id, signal=signal
                )
            else:
                request = CancelRequest(
                    request_id=request_id,
                    workflow_id=run.workflow_id,
                    run_id=run.run_id,
                    reason=definition.reason,
                    terminate=definition.operation == "terminate",
                )
            async with gate:
                try:
                    # The handle's own methods make a new request id each time; the batch needs its own,
                    # the same on every attempt.
                    await client._call(request)
                except (
                    WorkflowNotFoundError,
                    NamespaceSuspendedError,
                    QuotaExceededError,
                    PayloadTooLargeError,
                    MalformedRequestError,
                ) as exc:
                    refused[run.run_id] = _result(run, "failed", f"refused: {exc}")
                    log.info(
                        "batch request refused",
                        extra={"namespace": record.name, "run_id": run.run_id, "why": str(exc)},
                    )

        sending: list[asyncio.Task[None]] = []
        for n, run in enumerate(runs):
            # Spread over the page's share of time at the batch's rate: the n-th not before n / rate
            # (an attempt retried after a crash is late already: it sends what is left at once).
            due = began + timedelta(seconds=n / definition.rate)
            await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            sending.append(asyncio.create_task(send(run)))
        await asyncio.gather(*sending)
        return refused

    async def _record(self, namespace: str) -> NamespaceRecord:
        try:
            record = await self.resources.control.get_namespace(namespace)
        except ControlError as exc:
            raise ApplicationError(str(exc), type="UnknownNamespace", non_retryable=True) from None
        if record.status == "deleted":
            await self._forget_client(record)
            raise ApplicationError(
                f"namespace {namespace!r} is deleted", type="UnknownNamespace", non_retryable=True
            )
        return record

    async def _parsed(self, record: NamespaceRecord, query: str) -> VisibilityQuery:
        """The query, parsed against the namespace's search attributes as they are now (one registered
        after the batch began is known)."""
        attributes = await search_attributes_of(self.resources.control, record.name)
        try:
            return parse_query(query, attributes)
        except QueryError as exc:
            raise _refused(exc) from None

    async def _client(self, record: NamespaceRecord) -> Client:
        url = namespace_amqp_url(self.resources.settings, record.cell, record.vhost)
        async with self._opening:
            if url not in self._clients:
                self._clients[url] = await Client.connect(url)
        return self._clients[url]

    async def _forget_client(self, record: NamespaceRecord) -> None:
        url = namespace_amqp_url(self.resources.settings, record.cell, record.vhost)
        async with self._opening:
            client = self._clients.pop(url, None)
        if client is not None:
            await client.close()


async def _documents(store: RunStore, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    cursor = store.runs.find({"_id": {"$in": list(run_ids)}}, _PROJECTION)
    return {str(document["_id"]): document async for document in cursor}


@dataclass(frozen=True)
class _Marked:
    """A batch's definition with the chain that names its requests."""

    definition: BatchDefinition
    chain: str
    began: datetime  # when the batch took the page up: nothing it sent reached a run before

    def request_id(self, run_id: str) -> str:
        return batch_request_id(self.chain, run_id)


async def _verdict(
    marked: _Marked, store: RunStore, document: dict[str, Any] | None, *, sent: bool
) -> tuple[str, str] | None:
    """What became of a run as its document shows it: (outcome, detail), or None while it is open and
    shows no request of the batch (it is to be sent one, or the one ``sent`` has not reached it)."""
    definition = marked.definition
    if document is None or document.get("namespace") != definition.namespace:
        return "failed", "no such run (deleted, or past the namespace's retention)"
    state = state_of(document)
    request_id = marked.request_id(str(document["_id"]))
    status = str(document["status"])
    if definition.operation == "terminate":
        if status == "terminated" and (sent or await _terminated_by(store, document, marked)):
            return "succeeded", ""
    elif request_id in (state.get("recent_request_ids") or []) or any(
        message.get("request_id") == request_id for message in state.get("buffered") or []
    ):
        return "succeeded", ""
    if status not in OPEN_STATUSES:
        return "skipped", f"it was {status} before the batch reached it"
    if definition.operation == "cancel" and state.get("cancel_requested"):
        return "skipped", "its cancellation was requested already"
    return None


async def _terminated_by(store: RunStore, document: dict[str, Any], marked: _Marked) -> bool:
    """Whether the run's termination is the batch's: it carries the batch's reason and came after the
    page began (a terminated run met again, by an attempt after a crash, was most likely terminated by
    the attempt before; one terminated earlier, with the same reason or none, was closed before the
    batch reached it)."""
    events = await store.read_history(str(document["_id"]))
    if not events or not isinstance(events[-1], h.WorkflowExecutionTerminated):
        return False
    last = events[-1]
    return last.reason == marked.definition.reason and last.timestamp >= marked.began - CLOCK_SKEW


async def _await_effects(marked: _Marked, store: RunStore, runs: list[SelectedRun]) -> dict[str, RunResult]:
    """Wait until each run shows the request sent to it (or closed without it); those that show neither
    within ``EFFECT_SECONDS`` are failed: their run did not take the request (a signal buffer at its
    limit) or the cell is far behind."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EFFECT_SECONDS
    results: dict[str, RunResult] = {}
    left = {run.run_id: run for run in runs}
    while left:
        documents = await _documents(store, left)
        for run_id, run in list(left.items()):
            verdict = await _verdict(marked, store, documents.get(run_id), sent=True)
            if verdict is not None:
                results[run_id] = _result(run, *verdict)
                del left[run_id]
        if not left:
            break
        if loop.time() > deadline:
            for run in left.values():
                results[run.run_id] = _result(
                    run,
                    "failed",
                    f"the run did not take the {marked.definition.operation} in {EFFECT_SECONDS:g} s",
                )
            break
        await asyncio.sleep(LOOK_EVERY)
    return results


def _result(run: SelectedRun, outcome: Any, detail: str = "") -> RunResult:
    return RunResult(run_id=run.run_id, workflow_id=run.workflow_id, outcome=outcome, detail=detail)


def _refused(exc: QueryError) -> ApplicationError:
    return ApplicationError(str(exc), type="BadQuery", non_retryable=True)


@contextlib.asynccontextmanager
async def _beating() -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            activity.heartbeat()

    beating = asyncio.create_task(beat())
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
