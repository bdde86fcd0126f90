"""A cell's database: one document per run (its state with its armed timers, its latest history batch
and its latest outbox), history batches, the outbox journal and partition epochs.

Writes are conditional and need no transactions: a run document changes only if its
``next_event_id`` is the one the writer read and its ``epoch`` is not newer than the writer's, so a
duplicate or a zombie writer fails instead of forking history (invariants 2 and 3 of
docs/architecture.md). The newest
batch of events rides in the run document itself (``tail``). A write adds its events to the tail until
the tail passes ``TAIL_BYTES``; that write's tail is then copied to the history collection right after
it (listed in ``batch_starts``), and the next write begins a new tail. A short run's history is thus
written with its run document alone, no copy at all. Readers take the tail for what no listed batch
holds (a copy not landed yet, or a tail not copied), so a crash between a write and its copy loses
nothing.

Every hot read is a lookup by ``_id``: the latest run of an execution through a pointer document,
history batches by their ids listed in the run document. Durable timers are the armed timers of the
run state, so arming or cancelling one costs no write of its own; the owner of a partition loads them
into memory when it takes the partition.

A new run is written before anything names it as the latest of its workflow when the workflow has a
run already (a reset's run: the pointer moves after its insert, the run it replaces is changed after
that), so a crash between those writes leaves the old run open next to the new one, never a pointer to
no run; the reset read again finishes the rest. A new run's history past one batch's bound (a reset's
copied history) is written as batches ahead of its document, so no document passes the database's
limit. A start's pointer is written before its run (the start read again recreates the same run id).

The outbox of a write is sent after it and the batch's offsets are committed after that, so an outbox
can be unsent only if its batch is not committed. Each batch therefore journals which runs it gives an
outbox (one small insert per partition, deleted once the outbox is sent); whoever takes the partition
re-sends the outboxes that journal entries of uncommitted batches name. No per-run write is needed to
mark an outbox sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import bson
from aiokafka.partitioner import murmur2
from opentelemetry import trace
from pydantic import TypeAdapter
from pymongo import ASCENDING, DESCENDING, ReplaceOne, ReturnDocument
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DocumentTooLarge, DuplicateKeyError, OperationFailure

from perdure.infra.document_writes import each, insert_ignoring_duplicates
from perdure.platform.core import history as h
from perdure.platform.core import outbox as o
from perdure.platform.core.run_state import ArmedTimer, RunState
from perdure.platform.core.visibility_plan import ATTRIBUTE_PREFIX, attribute_fields
from perdure.platform.core.visibility_plan import (
    SEARCH_ATTRIBUTE_NAME as SEARCH_ATTRIBUTE_NAME,  # re-exported: the console checks names by it
)
from perdure.platform.stores.run_bodies import (
    packed,
    packed_json,
    packed_model,
    state_of,
    stored_size,
    unpacked,
)

Document = dict[str, Any]
tracer = trace.get_tracer("perdure.store")
log = logging.getLogger("perdure.store")
_outbox_adapter: TypeAdapter[list[o.OutboxEntry]] = TypeAdapter(list[o.OutboxEntry])
_armed_adapter: TypeAdapter[dict[str, ArmedTimer]] = TypeAdapter(dict[str, ArmedTimer])


# What one document may hold at most: MongoDB refuses a document past 16 MiB (FerretDB takes more, but
# a cell must move to MongoDB unchanged); the margin covers what the server adds to what is measured.
MAX_DOCUMENT_BYTES = 15 * 1024 * 1024
# The most events (as JSON) one history batch written ahead of its run document holds: a reset's copied
# prefix (up to a run's whole history limit) goes in batches of this size, never in one document.
HISTORY_BATCH_BYTES = 4 * 1024 * 1024
# A run document's tail grows, write after write, up to this (as stored), before it is copied out as a
# history batch: below it an update rewrites a small field, and a short run's history needs no copy.
TAIL_BYTES = 16 * 1024
# The server's codes for a document or an update's result past its size limit.
_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})


def _refused_as_too_large(exc: Exception) -> bool:
    """Whether the database (or the driver, before sending) refused a document for its size."""
    if isinstance(exc, BulkWriteError):
        return any(e.get("code") in _TOO_LARGE_CODES for e in exc.details.get("writeErrors", []))
    return isinstance(exc, DocumentTooLarge) or (
        isinstance(exc, OperationFailure) and exc.code in _TOO_LARGE_CODES
    )


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), so the owner of a timer is the owner of its run."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


class FencedError(RuntimeError):
    """A newer owner of the partition wrote first: this process must stop writing for it."""


class RunTooLarge(ValueError):
    """A run's write would pass what the database stores in one document: bad input for these
    executions (``executions``: namespace and workflow id), not an outage to wait out."""

    def __init__(self, executions: set[tuple[str, str]], detail: str) -> None:
        super().__init__(detail)
        self.executions = executions


@dataclass
class RunEntry:
    """A run as the engine holds it between messages."""

    state: RunState
    partition: int
    persisted_next_event_id: int  # 1 for a run not yet written
    # First event ids of the stored history batches (their ``_id``s follow from them).
    batch_starts: list[int] = field(default_factory=list)
    # The stored size of the history (its events as JSON), for storage metering.
    history_bytes: int = 0
    # The whole history, kept while the run is open (workflow tasks carry parts of it, or all of it).
    history: list[h.HistoryEvent] | None = None
    # The events of its document's tail that no history batch holds (as JSON): the next write's tail
    # begins with them.
    tail: list[dict[str, Any]] = field(default_factory=list)
    # What this poll changed: written together, then the outbox is sent.
    new_events: list[h.HistoryEvent] = field(default_factory=list)
    new_outbox: list[o.OutboxEntry] = field(default_factory=list)
    state_changed: bool = False
    # The workflow's latest-run pointer names this new run only once its document is written (a reset's
    # run: meanwhile the pointer names the run it was reset from), not before it as for a start.
    pointer_after: bool = False
    # Move the pointer to this run, written before (a reset read again after a crash between its new
    # run's document and the pointer).
    repoint: bool = False
    # The run the pointer named before it names this one, kept in the pointer: should this run not have
    # been written, readers of the pointer take that one.
    replaces: str | None = None

    @property
    def dirty(self) -> bool:
        return bool(self.new_events) or self.state_changed or self.repoint

    def reset_changes(self) -> None:
        self.new_events, self.new_outbox, self.state_changed, self.repoint = [], [], False, False


def history_batches(entry: RunEntry) -> list[list[dict[str, Any]]]:
    """The entry's new events (as JSON) in the history batches its write makes: the last rides in the
    run document as its tail. A run written before gets one batch per write; a new run's events (a
    reset's new run holds a copied history, up to the run's history limit) are cut into batches of
    ``HISTORY_BATCH_BYTES`` at most, measured as stored (an event larger than that alone), the others
    written ahead of the run document. The cut ignores the events' time stamps, the one thing a reset
    written again after a crash may record differently, so the batches are the same ranges of events
    every time."""
    events = h.history_to_json(entry.new_events)
    if entry.persisted_next_event_id != 1 or not events:
        return [events]
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for event in events:
        event_size = len(bson.encode(event)) - len(str(event.get("timestamp", "")))
        if batches[-1] and size + event_size > HISTORY_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(event)
        size += event_size
    return batches


def next_tail(entry: RunEntry) -> list[dict[str, Any]]:
    """The tail of the entry's next write: the events no batch holds yet, then its newest batch."""
    return [*entry.tail, *history_batches(entry)[-1]]


def document_size(entry: RunEntry, epoch: int = 0, *, exact: bool = False) -> int:
    """The stored size of the run document the entry's next write makes (BSON, as the server counts).
    Unless ``exact``, a bound that measures no history: its tail counted as a whole batch's bound."""
    if exact:
        document = _state_document(entry, epoch, next_tail(entry))
        return len(bson.encode({"_id": entry.state.run_id, **document, "batch_starts": []}))
    document = _state_document(entry, epoch, [])
    bound = HISTORY_BATCH_BYTES + TAIL_BYTES
    return len(bson.encode({"_id": entry.state.run_id, **document, "batch_starts": []})) + bound


def _state_document(entry: RunEntry, epoch: int, tail: list[dict[str, Any]] | None = None) -> Document:
    """The run document of the entry's write; ``tail`` is its tail (``next_tail``)."""
    state = entry.state
    if tail is None:
        tail = next_tail(entry)
    return {
        "namespace": state.namespace,
        "workflow_id": state.workflow_id,
        "workflow_type": state.workflow_type,
        "status": state.status,
        "start_time": state.start_time,
        "close_time": state.close_time,
        "blocked_reason": state.blocked_reason,
        "partition": entry.partition,
        "epoch": epoch,
        "next_event_id": state.next_event_id,
        # The bulky parts are opaque to the database (run_bodies.py).
        "state": packed_model(state),
        "tail": {
            "first_event_id": tail[0]["event_id"] if tail else 0,
            "events": packed(tail),
        },
        "outbox": packed_json(_outbox_adapter.dump_json(entry.new_outbox)),
        "has_timers": bool(state.armed_timers),
        # Top-level copies of the search attributes, for their indexes (platform/core/visibility_plan.py).
        **attribute_fields(state.search_attributes),
    }


def _tail_copied_out(document: Document) -> bool:
    """Whether a run document's tail was copied out as a history batch (or is being): it is listed."""
    return (document.get("tail") or {}).get("first_event_id") in (document.get("batch_starts") or [])


def _batch_id(run_id: str, first_event_id: int) -> str:
    return f"{run_id}/{first_event_id:012d}"


def _pointer_id(namespace: str, workflow_id: str) -> str:
    """The ``_id`` of the document naming an execution's latest run (kept in the runs collection)."""
    return f"latest:{namespace}/{workflow_id}"


class RunStore:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self.db = database
        self.runs = database["runs"]
        self.history = database["history"]
        self.journal = database["outbox_journal"]
        self.epochs = database["partition_epochs"]
        # Records of a namespace being moved away, held by the engine until the move hands them over.
        self.held = database["held_records"]
        # The copy of the last write's tails into the history collection, in flight, and its batches.
        self._copying: asyncio.Task[list[Document]] | None = None
        self._uncopied: list[Document] = []

    async def settle_copies(self) -> None:
        """Wait for the tails of the last write to be in the history collection (copying them again if
        that failed: a run's next write replaces its tail, so nothing is written before they are)."""
        copying, self._copying = self._copying, None
        if copying is not None:
            try:
                await copying
            except Exception:
                log.warning("copying history batches failed; copying them again", exc_info=True)
            else:
                self._uncopied = []
        # Kept until they land: should this copy fail too (the database still down), the write that
        # called fails with it, and the next write copies them first (forgetting them would let that
        # write replace their only other copy, its runs' tails, and leave a gap in their histories).
        if self._uncopied:
            await insert_ignoring_duplicates(self.history, self._uncopied)
            self._uncopied = []

    async def ensure_indexes(self) -> None:
        await self.runs.create_index(
            [("namespace", ASCENDING), ("workflow_id", ASCENDING), ("start_time", DESCENDING)]
        )
        await self.runs.create_index(
            [("namespace", ASCENDING), ("status", ASCENDING), ("start_time", DESCENDING)]
        )
        await self.runs.create_index(
            [("namespace", ASCENDING), ("workflow_type", ASCENDING), ("start_time", DESCENDING)]
        )
        # The console's list of a namespace's runs unfiltered, page after page (``list_page``).
        await self.runs.create_index(
            [("namespace", ASCENDING), ("start_time", DESCENDING), ("_id", DESCENDING)]
        )
        await self.runs.create_index([("partition", ASCENDING), ("has_timers", ASCENDING)])
        await self.runs.create_index([("status", ASCENDING)])
        await self.history.create_index([("run_id", ASCENDING), ("first_event_id", ASCENDING)], unique=True)
        await self.journal.create_index([("partition", ASCENDING)])
        await self.held.create_index(
            [("namespace", ASCENDING), ("partition", ASCENDING), ("offset", ASCENDING)]
        )

    # -- epochs ---------------------------------------------------------------------------------------
    async def take_partition(self, partition: int) -> int:
        """Bump the partition's epoch: every older writer is refused from now on."""
        document = await self.epochs.find_one_and_update(
            {"_id": partition}, {"$inc": {"epoch": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert document is not None
        return int(document["epoch"])

    # -- reading runs -----------------------------------------------------------------------------------
    async def latest_run(self, namespace: str, workflow_id: str) -> Document | None:
        pointer = await self.runs.find_one({"_id": _pointer_id(namespace, workflow_id)})
        if pointer is None:
            return None
        document = await self.run(pointer["run_id"])
        if document is None and pointer.get("previous_run_id"):
            # The run it names was never written (a crash between a pointer and its run): the latest is
            # still the run it named before, which that batch, read again, goes on from.
            document = await self.run(pointer["previous_run_id"])
        return document

    async def run(self, run_id: str) -> Document | None:
        return await self.runs.find_one({"_id": run_id})

    @staticmethod
    def entry_of(document: Document) -> RunEntry:
        stored = document["state"]
        if isinstance(stored, bytes):
            state = RunState.model_validate_json(stored)
        else:
            state = RunState.model_validate(stored)
        tail = document.get("tail") or {}
        return RunEntry(
            state=state,
            partition=document["partition"],
            persisted_next_event_id=state.next_event_id,
            batch_starts=list(document.get("batch_starts") or []),
            history_bytes=document.get("history_bytes", 0),
            # A tail copied out (or being copied): the next write begins a new one.
            tail=[] if _tail_copied_out(document) else list(unpacked(tail.get("events")) or []),
        )

    async def read_history(self, run_id: str, document: Document | None = None) -> list[h.HistoryEvent]:
        """The whole history: stored batches, completed by the run document's tail if its copy is missing."""
        document = document or await self.run(run_id)
        if document is None:
            return []
        events: list[h.HistoryEvent] = []
        starts = [start for start in document.get("batch_starts") or [] if start < document["next_event_id"]]
        for start in starts:
            batch = await self.history.find_one({"_id": _batch_id(run_id, start)})
            if batch is None:
                break  # only the newest batch can be missing (a crash before its copy): the tail has it
            events.extend(h.event_from_json(e) for e in unpacked(batch["events"]))
        tail = document.get("tail") or {}
        if tail.get("events") and (not events or events[-1].event_id < tail["first_event_id"]):
            events.extend(h.event_from_json(e) for e in unpacked(tail["events"]))
        h.check_contiguous(events)
        return events

    async def flush_tail(self, document: Document) -> None:
        """Copy a run document's tail into the history collection if it was copied out (it is listed as a
        batch: after a crash between the write and its copy). A tail still growing is not: a copy of it
        now would hold less than the batch of that id will."""
        tail = document.get("tail") or {}
        if not tail.get("events") or not _tail_copied_out(document):
            return
        try:
            await self.history.insert_one(
                {
                    "_id": _batch_id(document["_id"], tail["first_event_id"]),
                    "run_id": document["_id"],
                    "first_event_id": tail["first_event_id"],
                    "events": tail["events"],
                }
            )
        except DuplicateKeyError:
            pass

    # -- writing --------------------------------------------------------------------------------------
    async def write(
        self, entries: Sequence[RunEntry], epochs: dict[int, int], offsets: dict[int, tuple[int, int]]
    ) -> list[str]:
        """Persist every changed run; raises ``FencedError`` if any run document was changed by a newer
        writer or already exists (nothing of this batch is then acknowledged by the caller).

        ``offsets`` holds the first and last offset of the batch per partition; the journal entries
        written for it are returned, to be forgotten once the batch is committed."""
        # The workflow's latest-run pointer, per pointer ``_id``: the last run of the batch wins (two
        # resets of one workflow in a batch must leave it on the second). A start's is written before
        # its run (if the insert fails, the start is read again and makes this same run id); a reset's
        # after its run (the pointer never names a run that does not exist while the workflow has one).
        pointers: dict[str, Document] = {}
        starting: set[str] = set()  # pointers of starts only
        following: set[str] = set()  # pointers of a reset's run (or moved to a run written before)
        ahead: list[Document] = []  # new runs' history batches, written before the runs that list them
        inserts: list[Document] = []
        updates: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        batches: list[Document] = []
        written: list[tuple[RunEntry, list[int], int]] = []
        tails: dict[int, list[dict[str, Any]]] = {}  # by id(entry): the tail each keeps growing
        for entry in entries:
            if not entry.dirty:
                continue
            epoch = epochs[entry.partition]
            state = entry.state
            run_id = state.run_id
            starts = list(entry.batch_starts)
            history_bytes = entry.history_bytes
            if entry.persisted_next_event_id == 1 or entry.repoint:
                pointer: Document = {
                    "_id": _pointer_id(state.namespace, state.workflow_id),
                    "kind": "pointer",
                    "run_id": run_id,
                    "start_time": state.start_time,
                    "previous_run_id": entry.replaces,
                }
                pointers[pointer["_id"]] = pointer
                (following if entry.pointer_after or entry.repoint else starting).add(pointer["_id"])
            if not (entry.new_events or entry.state_changed):
                written.append((entry, starts, history_bytes))
                continue  # only its pointer moves
            *earlier_batches, newest = history_batches(entry)
            tail_events = [*entry.tail, *newest]
            document = _state_document(entry, epoch, tail_events)
            for events in earlier_batches:
                first = events[0]["event_id"]
                starts.append(first)
                ahead.append({"_id": _batch_id(run_id, first), "run_id": run_id, "first_event_id": first})
                ahead[-1]["events"] = packed(events)
                history_bytes += stored_size(ahead[-1]["events"])
            tail = document["tail"]
            history_bytes += stored_size(newest) if newest else 0
            if tail["events"] and stored_size(tail["events"]) > TAIL_BYTES:
                # Copied out after this write; the next write begins a new tail.
                first = tail["first_event_id"]
                starts.append(first)
                batches.append(
                    {"_id": _batch_id(run_id, first), "run_id": run_id, "first_event_id": first}
                    | {"events": tail["events"]}
                )
            else:
                tails[id(entry)] = tail_events
            document["batch_starts"] = starts
            document["history_bytes"] = history_bytes
            written.append((entry, starts, history_bytes))
            if entry.persisted_next_event_id == 1:
                inserts.append({"_id": run_id, **document})
            else:
                condition = {
                    "_id": run_id,
                    "next_event_id": entry.persisted_next_event_id,
                    "epoch": {"$lte": epoch},
                }
                updates.append((run_id, partial(self.runs.update_one, condition, {"$set": document})))
        if not written:
            return []
        # A run's tail is replaced by its next write: its copy must have landed by then.
        with tracer.start_as_current_span("perdure.store.settle_copies"):
            await self.settle_copies()
        journal = self._journal_entries([entry for entry, _, _ in written], offsets, epochs)
        # An execution with a reset in the batch has its pointer moved after the inserts only (a start
        # of it in the same batch is found again by its run id: see the engine's ``_load``).
        pointers_before = [pointers[i] for i in starting - following]
        pointers_after = [pointers[i] for i in following]
        try:
            # Most executions have one run, so a start's pointer is inserted, and replaced only when it
            # exists. A batch written ahead met again is of this same new run, written before a crash:
            # the same events (written once; only their time stamps could differ).
            with tracer.start_as_current_span("perdure.store.insert_new"):
                earlier, _, _ = await asyncio.gather(
                    insert_ignoring_duplicates(self.runs, pointers_before),
                    insert_ignoring_duplicates(self.journal, journal),
                    insert_ignoring_duplicates(self.history, ahead),
                )
                await each([partial(self.runs.replace_one, {"_id": d["_id"]}, d) for d in earlier])
                refused = await insert_ignoring_duplicates(self.runs, inserts)
            if refused:
                raise FencedError(f"runs that exist already: {[d['_id'] for d in refused][:5]}")
            # The new runs exist: now the pointers may name them, and only then are the runs they
            # replace changed (terminated by a reset), so a crash leaves a run open rather than none.
            moves = [
                partial(self.runs.replace_one, {"_id": d["_id"]}, d, upsert=True) for d in pointers_after
            ]
            await each(moves)
            with tracer.start_as_current_span("perdure.store.update_runs", attributes={"runs": len(updates)}):
                results = await each([update for _, update in updates])
        except (DocumentTooLarge, OperationFailure) as exc:
            if not _refused_as_too_large(exc):
                raise
            raise self._too_large(written, epochs, exc) from exc
        stale = [
            run_id for (run_id, _), result in zip(updates, results, strict=True) if result.matched_count != 1
        ]
        if stale:
            raise FencedError(f"runs changed by another writer: {stale[:5]}")
        # The copy is not waited for: until it lands, readers take the run document's tail (and whoever
        # loads the run after a crash copies it), so the outbox of this write goes out one round trip
        # sooner. A duplicate is a batch copied before.
        if batches:
            self._uncopied = batches
            self._copying = asyncio.create_task(insert_ignoring_duplicates(self.history, batches))
        for entry, starts, history_bytes in written:
            entry.persisted_next_event_id = entry.state.next_event_id
            entry.batch_starts = starts
            entry.history_bytes = history_bytes
            if entry.new_events or entry.state_changed:
                entry.tail = tails.get(id(entry), [])
        return [d["_id"] for d in journal]

    @staticmethod
    def _too_large(
        written: Sequence[tuple[RunEntry, list[int], int]], epochs: dict[int, int], exc: Exception
    ) -> RunTooLarge:
        """The database refused a document as too large: which executions' writes did it (measured)."""
        sizes = [
            (document_size(entry, epochs[entry.partition], exact=True), entry) for entry, _, _ in written
        ]
        executions = {
            (e.state.namespace, e.state.workflow_id) for size, e in sizes if size > MAX_DOCUMENT_BYTES
        }
        if not executions and sizes:  # the server's limit is lower than thought: the largest, then
            _, largest = max(sizes, key=lambda pair: pair[0])
            executions = {(largest.state.namespace, largest.state.workflow_id)}
        return RunTooLarge(executions, f"a run's document is past the database's limit: {exc}")

    @staticmethod
    def _journal_entries(
        entries: Sequence[RunEntry], offsets: dict[int, tuple[int, int]], epochs: dict[int, int] | None = None
    ) -> list[Document]:
        # Each run with the next_event_id its write leaves: a run document that does not have it was
        # not written by this batch, and its outbox (of an earlier batch) was sent already.
        # (Documents rather than pairs: FerretDB v1 stores no arrays of arrays.)
        runs: dict[int, list[Document]] = {}
        for entry in entries:
            if entry.new_outbox:
                written = {"run_id": entry.state.run_id, "next_event_id": entry.state.next_event_id}
                runs.setdefault(entry.partition, []).append(written)
        return [
            {
                "_id": f"{partition}/{offsets[partition][0]:020d}/{uuid.uuid4().hex}",
                "partition": partition,
                "last_offset": offsets[partition][1],
                # The writer's epoch: a commit by a later owner says nothing of a fenced writer's sends.
                **({"epoch": epochs[partition]} if epochs is not None else {}),
                "runs": run_ids,
            }
            for partition, run_ids in runs.items()
        ]

    async def forget_journal(self, ids: Iterable[str]) -> None:
        """Drop journal entries of committed batches (their outboxes were sent)."""
        ids = list(ids)
        if ids:
            await self.journal.delete_many({"_id": {"$in": ids}})

    async def pending_outboxes(
        self, partition: int, committed: int | None, epoch: int | None = None
    ) -> tuple[list[str], list[Document]]:
        """The run documents whose outbox may be unsent, with the journal entries naming them (to be
        forgotten once they are sent): those of batches not committed (``committed`` is the
        partition's committed offset, None if it has none). Entries of committed batches that were
        not yet forgotten are forgotten now. Taken at ``epoch``, an entry written at an epoch older
        than the previous owner's is pending whatever was committed: its writer was fenced off (a
        zombie whose write landed before it learnt so), and the offsets it read were committed by
        another owner, which found its writes done and sent nothing of them."""
        journal = [d async for d in self.journal.find({"partition": partition})]
        stale = [
            d["_id"]
            for d in journal
            if committed is not None
            and d["last_offset"] < committed
            and (epoch is None or d.get("epoch", epoch - 1) >= epoch - 1)
        ]
        await self.forget_journal(stale)
        pending = [d for d in journal if d["_id"] not in stale]
        return [d["_id"] for d in pending], await self._unsent_of(pending)

    async def fenced_outboxes(self, epochs: dict[int, int]) -> tuple[list[str], list[Document]]:
        """Like ``pending_outboxes``, for journal entries that writers fenced off wrote in the owned
        partitions (``epochs``) after this owner took them: their writes may have landed, their outboxes
        were not sent, and nobody else will send them."""
        journal = [d async for d in self.journal.find({"partition": {"$in": sorted(epochs)}})]
        fenced = [d for d in journal if d.get("epoch", epochs[d["partition"]]) < epochs[d["partition"]]]
        return [d["_id"] for d in fenced], await self._unsent_of(fenced)

    async def _unsent_of(self, pending: list[Document]) -> list[Document]:
        """The run documents still as the journal entries' writes left them (their outboxes are theirs)."""
        written = {(run["run_id"], run["next_event_id"]) for d in pending for run in d["runs"]}
        documents = await each([partial(self.run, run_id) for run_id in sorted({r for r, _ in written})])
        return [
            d
            for d in documents
            if d is not None and d.get("outbox") and (d["_id"], d["next_event_id"]) in written
        ]

    @staticmethod
    def outbox_of(document: Document) -> list[o.OutboxEntry]:
        stored = document.get("outbox") or []
        if isinstance(stored, bytes):
            return _outbox_adapter.validate_json(stored)
        return _outbox_adapter.validate_python(stored)

    # -- timers ---------------------------------------------------------------------------------------
    @staticmethod
    def timer_document(timer: o.CreateTimer, partition: int, namespace: str, workflow_id: str) -> Document:
        return {
            "_id": timer.timer_key,
            "partition": partition,
            "fire_at": timer.fire_at,
            "namespace": namespace,
            "workflow_id": workflow_id,
            "notice": timer.notice.model_dump(mode="json"),
        }

    async def armed_timers_of(
        self, partitions: int | list[int], namespace: str | None = None
    ) -> list[Document]:
        """Every timer armed by the runs of a partition, or of several (of one namespace, if given), as
        of their last write."""
        projection = {"namespace": 1, "workflow_id": 1, "partition": 1, "state": 1}
        query: Document = {
            "partition": partitions if isinstance(partitions, int) else {"$in": partitions},
            "has_timers": True,
        }
        if namespace is not None:
            query["namespace"] = namespace
        timers = []
        async for document in self.runs.find(query, projection):
            armed = _armed_adapter.validate_python(state_of(document).get("armed_timers") or {})
            for key, timer in armed.items():
                created = o.CreateTimer(timer_key=key, fire_at=timer.fire_at, notice=timer.notice)
                timers.append(
                    self.timer_document(
                        created, document["partition"], document["namespace"], document["workflow_id"]
                    )
                )
        return timers

    # -- a namespace moving away ------------------------------------------------------------------------
    async def hold(self, records: Sequence[Document]) -> None:
        """Keep records of namespaces being moved (``_id`` "<partition>:<offset>", so a batch read again
        holds each once)."""
        if records:
            await self.held.bulk_write(
                [ReplaceOne({"_id": r["_id"]}, r, upsert=True) for r in records], ordered=False
            )

    def held_of(self, namespace: str) -> AsyncCursor[Document]:
        return self.held.find({"namespace": namespace}).sort(
            [("partition", ASCENDING), ("offset", ASCENDING)]
        )

    # -- visibility -----------------------------------------------------------------------------------
    def list_cursor(
        self, namespace: str, *, status: str | None = None, workflow_type: str | None = None, limit: int = 100
    ) -> AsyncCursor[Document]:
        """The visibility query, newest first; served by the (namespace, status | workflow_type,
        start_time) indexes."""
        query: Document = {"namespace": namespace}
        if status:
            query["status"] = status
        if workflow_type:
            query["workflow_type"] = workflow_type
        projection = {"state": 0, "tail": 0, "outbox": 0}
        return self.runs.find(query, projection).sort("start_time", DESCENDING).limit(limit)

    async def list_page(
        self,
        namespace: str,
        *,
        status: str | None = None,
        workflow_type: str | None = None,
        workflow_id_prefix: str | None = None,
        started_from: datetime | None = None,
        started_to: datetime | None = None,
        search_attribute: tuple[str, Sequence[Any]] | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[Document]:
        """A page of the visibility query, newest first in the order (start_time, run id) descending:
        the ``limit`` runs that follow ``after`` (the start time and run id of the previous page's last
        run; keyset pagination, no skip). Ask for one more than a page holds to learn if another follows.

        ``search_attribute`` is a name and the values it may hold (any of them matches). Every query is
        served by a (namespace, ..., start_time) index in its order; only runs that started at the same
        moment (a batch of starts takes the engine's one clock) are sorted by run id after reading."""
        query: Document = {"namespace": namespace}
        if status:
            query["status"] = status
        if workflow_type:
            query["workflow_type"] = workflow_type
        if workflow_id_prefix:
            query["workflow_id"] = {"$regex": f"^{re.escape(workflow_id_prefix)}"}
        if search_attribute is not None:
            name, values = search_attribute
            if not SEARCH_ATTRIBUTE_NAME.match(name):
                raise ValueError(f"{name!r} is no search attribute name")
            # The attribute's top-level copy (the state is opaque to the database: run_bodies.py).
            query[ATTRIBUTE_PREFIX + name] = {"$in": list(values)}
        projection = {"state": 0, "tail": 0, "outbox": 0}

        def within(moment: datetime) -> bool:
            return (started_from is None or moment >= started_from) and (
                started_to is None or moment <= started_to
            )

        async def tie_group(moment: datetime, below: str | None, count: int) -> list[Document]:
            """Runs that started at ``moment`` (run ids below ``below``), by run id descending."""
            condition: Document = {**query, "start_time": moment}
            if below is not None:
                condition["_id"] = {"$lt": below}
            cursor = self.runs.find(condition, projection).sort("_id", DESCENDING).limit(count)
            return [d async for d in cursor]

        page: list[Document] = []
        time_range: Document = {}
        if started_to is not None:
            time_range["$lte"] = started_to
        if after is not None:
            moment, run_id = after
            if within(moment):
                page = await tie_group(moment, run_id, limit)
            if started_to is None or moment <= started_to:
                time_range = {"$lt": moment}
        if started_from is not None:
            time_range["$gte"] = started_from
        wanted = limit - len(page)
        if wanted <= 0:
            return page
        condition = {**query, "start_time": time_range} if time_range else query
        cursor = self.runs.find(condition, projection).sort("start_time", DESCENDING).limit(wanted)
        older = [d async for d in cursor]
        if len(older) == wanted and older:
            # The page may end inside a group of runs that started together: read in the index's order,
            # which of them it holds is arbitrary, so it takes the first of the group by run id instead.
            last = older[-1]["start_time"]
            older = [d for d in older if d["start_time"] != last]
            older += await tie_group(last, None, wanted - len(older))
        older.sort(key=lambda d: (d["start_time"], d["_id"]), reverse=True)
        return page + older

    async def list_runs(
        self, namespace: str, *, status: str | None = None, workflow_type: str | None = None, limit: int = 100
    ) -> list[Document]:
        cursor = self.list_cursor(namespace, status=status, workflow_type=workflow_type, limit=limit)
        return [d async for d in cursor]

    def storage_of(self, partition: int) -> AsyncCursor[Document]:
        """What storage metering needs of each run of a partition (served by the partition index)."""
        projection = {"namespace": 1, "status": 1, "close_time": 1, "history_bytes": 1}
        return self.runs.find({"partition": partition}, projection)

    async def count_open(self, namespace: str) -> int:
        return await self.runs.count_documents(
            {"namespace": namespace, "status": {"$in": ["running", "blocked"]}}
        )

    async def purge_namespace(self, namespace: str) -> int:
        """Delete a namespace's runs, their histories and pointers; returns the runs deleted."""
        run_ids = [d["_id"] async for d in self.runs.find({"namespace": namespace}, {"_id": 1})]
        for run_id in run_ids:
            await self.history.delete_many({"run_id": run_id})
        await self.runs.delete_many({"_id": {"$regex": f"^latest:{re.escape(namespace)}/"}})
        await self.runs.delete_many({"namespace": namespace})
        return len(run_ids)

    async def count_running(self, namespace: str) -> int:
        return await self.runs.count_documents({"namespace": namespace, "status": "running"})

    async def blocked_runs(self, limit: int = 1000) -> list[Document]:
        cursor = self.runs.find({"status": "blocked"}, {"state": 0, "tail": 0, "outbox": 0}).limit(limit)
        return [d async for d in cursor]
