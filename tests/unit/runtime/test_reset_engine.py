"""The engine's side of a reset (docs/reset.md, "Idempotence and crashes"): what it asks of the write, how
a reset read again finishes one a crash cut short, how a burst of resets is spread over batches, and
how the new run's history is cut into bounded batches. Pure: the engine's apply step on caches built by
hand, the store's document builders; no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import bson
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from pymongo.errors import BulkWriteError, DocumentTooLarge, OperationFailure

from perdure.platform.cell import engine as engine_module
from perdure.platform.cell.engine import MAX_RESETS_PER_BATCH, CellEngine, Group, PartitionCache
from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core.payloads import default_converter
from perdure.platform.core.reset import reset_run_id
from perdure.platform.core.run_state import rebuild_state
from perdure.platform.core.state_machine import ExecutionStateMachine
from perdure.platform.protocol.cell_wire import DeadLetter, TaskEnvelope
from perdure.platform.stores.namespace_apps import LoadedNamespace
from perdure.platform.stores.run_bodies import unpacked
from perdure.platform.stores.run_store import (
    HISTORY_BATCH_BYTES,
    MAX_DOCUMENT_BYTES,
    RunEntry,
    _refused_as_too_large,
    _state_document,
    document_size,
    history_batches,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
KEY = ("ns", "wf")


def _history(run_id: str, signals: int = 1, payload_bytes: int = 10) -> list[h.HistoryEvent]:
    events: list[h.HistoryEvent] = [
        h.WorkflowExecutionStarted(
            event_id=1, timestamp=T0, workflow_type="Flow", workflow_id="wf", run_id=run_id, namespace="ns"
        )
    ]
    for i in range(signals):
        events.append(
            h.WorkflowExecutionSignaled(
                event_id=i + 2,
                timestamp=T0 + timedelta(seconds=i + 1),
                signal_name="note",
                request_id=f"s-{i}",
                input=default_converter.to_payloads(["x" * payload_bytes]),
            )
        )
    return events


def _written(events: list[h.HistoryEvent]) -> RunEntry:
    """A run as loaded from the database: its history written, nothing new."""
    entry = RunEntry(
        state=rebuild_state(events), partition=0, persisted_next_event_id=len(events) + 1, batch_starts=[1]
    )
    entry.history = list(events)
    return entry


class _NoNamespaces:
    def loaded(self, namespace: str) -> None:
        return None


class _Consumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def _engine() -> CellEngine:
    engine = object.__new__(CellEngine)
    engine.apps = cast(Any, _NoNamespaces())
    engine.machine = ExecutionStateMachine(
        clock=lambda: T0 + timedelta(days=1), new_id=lambda: "unused", limits_of=engine._limits_of
    )
    engine.caches = {0: PartitionCache()}
    engine.consumer = cast(Any, _Consumer())
    engine._too_large = set()
    return engine


def _apply(engine: CellEngine, *envelopes: TaskEnvelope) -> tuple[dict[str, RunEntry], list[Any]]:
    group = Group(KEY, 0)
    group.namespace = LoadedNamespace(record=cast(Any, object()))
    no_record = cast(ConsumerRecord[bytes, bytes], None)  # _apply reads the envelopes only
    group.items = [(no_record, envelope) for envelope in envelopes]
    touched: dict[str, RunEntry] = {}
    replies: list[Any] = []
    engine._apply(group, touched, [], replies, [])
    return touched, replies


def _reset(request_id: str, to: int | str = "last-workflow-task", run_id: str | None = None) -> TaskEnvelope:
    message = m.ResetWorkflow(request_id=request_id, to=cast(Any, to))
    return TaskEnvelope(namespace="ns", workflow_id="wf", run_id=run_id, message=message, reply_to="client")


# -- what the reset asks of the write --------------------------------------------------------------


def test_a_reset_writes_its_new_run_before_the_pointer_and_the_old_run_after_it() -> None:
    engine = _engine()
    old = _written(_history("old"))
    engine.caches[0].put(KEY, old, latest=True)
    touched, replies = _apply(engine, _reset("r"))
    new_run_id = reset_run_id("ns", "wf", "r")
    assert replies[0].reply.ok and replies[0].reply.run_id == new_run_id
    new = touched[new_run_id]
    # The pointer moves after the new run's insert and names the run it replaces (read if the insert
    # never happened); the old run's outbox (its termination) goes out before the new run's.
    assert (new.persisted_next_event_id, new.pointer_after, new.replaces) == (1, True, "old")
    assert list(touched) == ["old", new_run_id]
    assert old.state.status == "terminated" and old.state.reset_run_id == new_run_id


def test_a_reset_whose_new_run_would_not_fit_one_document_is_refused_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = _engine()
    old = _written(_history("old"))
    engine.caches[0].put(KEY, old, latest=True)
    monkeypatch.setattr(engine_module, "MAX_DOCUMENT_BYTES", HISTORY_BATCH_BYTES)  # any state is too much
    touched, replies = _apply(engine, _reset("r"))
    reply = replies[0].reply
    assert not reply.ok and reply.error.type == "reset_refused" and "database stores" in reply.error.message
    assert touched == {} and old.state.is_open and not old.dirty
    assert (
        engine.caches[0].latest[KEY] is old and reset_run_id("ns", "wf", "r") not in engine.caches[0].by_run
    )


# -- a reset read again ------------------------------------------------------------------------------


def _made_by_a_crashed_batch(engine: CellEngine, request_id: str) -> tuple[RunEntry, RunEntry]:
    """The state a crash leaves after the new run's insert and before the pointer moved: the old run is
    the latest (and open), the new run exists and is found by the reset's run id."""
    scratch = _engine()
    old = _written(_history("old"))
    scratch.caches[0].put(KEY, old, latest=True)
    touched, _ = _apply(scratch, _reset(request_id))
    made = touched[reset_run_id("ns", "wf", request_id)]
    made.persisted_next_event_id = made.state.next_event_id
    made.reset_changes()
    reloaded_old = _written(_history("old"))
    engine.caches[0].put(KEY, reloaded_old, latest=True)
    engine.caches[0].put(KEY, made, latest=False)
    return reloaded_old, made


def test_a_reset_read_again_after_a_crash_before_its_pointer_finishes_it() -> None:
    engine = _engine()
    old, made = _made_by_a_crashed_batch(engine, "r")
    touched, replies = _apply(engine, _reset("r"))
    assert replies[0].reply.ok and replies[0].reply.run_id == made.state.run_id
    assert made.repoint and made.replaces == "old" and engine.caches[0].latest[KEY] is made
    assert old.state.status == "terminated" and old.state.reset_run_id == made.state.run_id
    assert list(touched) == ["old", made.state.run_id]  # the old run's outbox first


def test_a_retried_reset_leaves_a_closed_runs_later_reset_alone() -> None:
    """Run ``old`` closed; reset into N1 (which closed too), then reset again into N2. The first reset
    sent again must answer N1 and leave ``old`` pointing to N2, and the workflow's pointer alone."""
    engine = _engine()
    closed = _history("old")
    closed.append(
        h.WorkflowExecutionCompleted(event_id=len(closed) + 1, timestamp=T0 + timedelta(hours=1), result=None)
    )
    old = _written(closed)
    n1 = _written(_history(reset_run_id("ns", "wf", "r1")))
    n1.state = n1.state.model_copy(
        update={"reset_from_run_id": "old", "reset_point": 2, "status": "completed", "close_time": T0}
    )
    n2 = _written(_history(reset_run_id("ns", "wf", "r2")))
    old.state = old.state.model_copy(update={"reset_run_id": n2.state.run_id, "reset_point": 2})
    cache = engine.caches[0]
    cache.put(KEY, n2, latest=True)
    cache.put(KEY, old, latest=False)
    cache.put(KEY, n1, latest=False)
    touched, replies = _apply(engine, _reset("r1"))
    assert replies[0].reply.ok and replies[0].reply.run_id == n1.state.run_id
    assert touched == {} and old.state.reset_run_id == n2.state.run_id and cache.latest[KEY] is n2


# -- a burst of resets ----------------------------------------------------------------------------------


def _record(tp: TopicPartition, offset: int, envelope: TaskEnvelope) -> ConsumerRecord[bytes, bytes]:
    value = envelope.encode()
    return ConsumerRecord(
        tp.topic, tp.partition, offset, 0, 0, envelope.key, value, None, len(envelope.key), len(value), ()
    )


def test_a_batch_applies_one_reset_per_execution_and_leaves_the_next_to_the_next_batch() -> None:
    engine = _engine()
    tp = TopicPartition("cell", 0)
    signal = TaskEnvelope(
        namespace="ns", workflow_id="other", message=m.SignalWorkflow(request_id="s", signal_name="x")
    )
    records = [
        _record(tp, 10, _reset("r1")),
        _record(tp, 11, signal),
        _record(tp, 12, _reset("r2")),  # the same workflow again: waits
        _record(tp, 13, signal),
    ]
    batch = {tp: records}
    rejected: list[DeadLetter] = []
    groups = engine._group(batch, rejected)
    assert batch[tp] == records[:2]  # what this batch applies and commits
    assert cast(_Consumer, engine.consumer).seeks == [(tp, 12)]  # read again from the second reset
    assert [e.message.request_id for _, e in groups[KEY].items] == ["r1"]
    assert rejected == []


def test_a_batch_applies_a_bounded_number_of_resets_in_all() -> None:
    engine = _engine()
    tp = TopicPartition("cell", 0)
    resets = [
        TaskEnvelope(namespace="ns", workflow_id=f"wf-{i}", message=m.ResetWorkflow(request_id=f"r{i}", to=1))
        for i in range(MAX_RESETS_PER_BATCH + 2)
    ]
    batch = {tp: [_record(tp, i, e) for i, e in enumerate(resets)]}
    groups = engine._group(batch, [])
    assert len(groups) == MAX_RESETS_PER_BATCH
    assert cast(_Consumer, engine.consumer).seeks == [(tp, MAX_RESETS_PER_BATCH)]


# -- the new run's history in bounded batches --------------------------------------------------------


def _new_run(events: list[h.HistoryEvent]) -> RunEntry:
    entry = RunEntry(state=rebuild_state(events), partition=0, persisted_next_event_id=1)
    entry.new_events = list(events)
    return entry


def test_a_new_runs_large_history_is_cut_into_bounded_batches_the_same_way_every_time() -> None:
    events = _history("new", signals=80, payload_bytes=200_000)  # ~16 MB (as JSON, base64)
    batches = history_batches(_new_run(events))
    assert len(batches) > 1
    assert all(len(bson.encode({"events": b})) <= HISTORY_BATCH_BYTES + 300_000 for b in batches)
    ids = [e["event_id"] for b in batches for e in b]
    assert ids == list(range(1, len(events) + 1))
    document = _state_document(_new_run(events), epoch=1)
    assert unpacked(document["tail"]["events"]) == batches[-1]
    assert len(bson.encode(document)) < MAX_DOCUMENT_BYTES
    # Written again after a crash, the same reset stamps its events anew: the cut is the same.
    later = [
        e.model_copy(update={"timestamp": e.timestamp + timedelta(microseconds=123_457)}) for e in events
    ]
    assert [[e["event_id"] for e in b] for b in history_batches(_new_run(later))] == [
        [e["event_id"] for e in b] for b in batches
    ]


def test_a_run_written_before_keeps_one_batch_per_write() -> None:
    events = _history("run", signals=3)
    entry = _written(events[:2])
    entry.new_events = events[2:]
    assert [[e["event_id"] for e in b] for b in history_batches(entry)] == [[3, 4]]


# -- a long history ------------------------------------------------------------------------------------


def test_a_reset_of_a_50k_event_history_is_written_in_bounded_batches() -> None:
    """The engine's part of a reset of a 50,000-event run (open, its history cached): the new run's
    history goes out as bounded batches with a small run document (the time this holds the engine loop,
    about 1.1 s on the development machine, is a figure of docs/reset.md, not asserted here)."""
    engine = _engine()
    old = _written(_history("old", signals=49_999, payload_bytes=100))
    engine.caches[0].put(KEY, old, latest=True)
    touched, replies = _apply(engine, _reset("r"))
    new = touched[reset_run_id("ns", "wf", "r")]
    *ahead, tail = history_batches(new)
    _state_document(new, 1, tail)
    assert replies[0].reply.ok and sum(len(b) for b in [*ahead, tail]) == 50_001
    assert len(ahead) >= 1 and document_size(new, exact=True) < MAX_DOCUMENT_BYTES


# -- a write the database refuses for its size -------------------------------------------------------


def test_a_document_refused_for_its_size_is_bad_input_not_an_outage() -> None:
    too_large = BulkWriteError({"writeErrors": [{"index": 0, "code": 10334, "errmsg": "BSONObjectTooLarge"}]})
    assert _refused_as_too_large(too_large) and _refused_as_too_large(DocumentTooLarge("too large"))
    assert not _refused_as_too_large(OperationFailure("not primary", code=10107))


def test_the_batch_read_again_dead_letters_the_records_of_an_execution_too_large_to_write() -> None:
    engine = _engine()
    engine._too_large = {KEY}
    tp = TopicPartition("cell", 0)
    signal = m.SignalWorkflow(request_id="s", signal_name="x")
    records = [
        _record(tp, 0, TaskEnvelope(namespace="ns", workflow_id="wf", message=signal)),
        _record(tp, 1, TaskEnvelope(namespace="ns", workflow_id="other", message=signal)),
    ]
    rejected: list[DeadLetter] = []
    groups = engine._group({tp: records}, rejected)
    assert list(groups) == [("ns", "other")]
    assert [letter.offset for letter in rejected] == [0] and "document size" in rejected[0].reason
    assert engine._too_large == set()  # once: the next batches apply the execution's records again
