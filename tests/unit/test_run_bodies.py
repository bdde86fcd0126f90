"""A run document's bulky parts are stored opaque (run_bodies.py) and read back unchanged, and documents
written before, with the same parts nested, read the same. Pure: the store's document builders and
readers, through a BSON round trip as the database makes; no services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import bson

from perdure.platform.core import history as h
from perdure.platform.core import outbox as o
from perdure.platform.core.history import ActivityOptions
from perdure.platform.core.payloads import default_converter
from perdure.platform.core.run_state import rebuild_state
from perdure.platform.stores.run_bodies import state_of, stored_size, unpacked
from perdure.platform.stores.run_store import RunEntry, RunStore, _state_document, history_batches
from perdure.platform.stores.visibility import describe_run

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _entry() -> RunEntry:
    events: list[h.HistoryEvent] = [
        h.WorkflowExecutionStarted(
            event_id=1,
            timestamp=T0,
            workflow_type="Flow",
            workflow_id="wf",
            run_id="r1",
            namespace="ns",
            input=default_converter.to_payloads([{"order": 7}]),
        ),
        h.UpsertWorkflowSearchAttributes(event_id=2, timestamp=T0, seq=1, attributes={"Tag": "blue"}),
    ]
    entry = RunEntry(state=rebuild_state(events), partition=3, persisted_next_event_id=1)
    entry.new_events = events
    entry.new_outbox = [
        o.DispatchActivity(
            namespace="ns",
            workflow_id="wf",
            workflow_type="Flow",
            run_id="r1",
            scheduled_event_id=2,
            attempt=1,
            activity_type="charge",
            input=default_converter.to_payloads(["card"]),
            options=ActivityOptions(),
            scheduled_time=T0,
        )
    ]
    return entry


def _stored(document: dict[str, Any]) -> dict[str, Any]:
    """The document as a reader gets it back from the database."""
    return bson.decode(bson.encode({"_id": "r1", **document}))


def test_the_bulky_parts_are_opaque_to_the_database_and_the_indexed_fields_are_not() -> None:
    stored = _stored(_state_document(_entry(), epoch=4))
    assert isinstance(stored["state"], bytes) and isinstance(stored["outbox"], bytes)
    assert isinstance(stored["tail"]["events"], bytes) and stored["tail"]["first_event_id"] == 1
    assert (stored["namespace"], stored["status"], stored["next_event_id"]) == ("ns", "running", 3)
    assert stored["sa_Tag"] == "blue" and stored["epoch"] == 4


def test_a_stored_run_reads_back_as_written() -> None:
    entry = _entry()
    stored = _stored(_state_document(entry, epoch=4))
    assert RunStore.entry_of(stored).state == entry.state
    assert RunStore.outbox_of(stored) == entry.new_outbox
    assert unpacked(stored["tail"]["events"]) == history_batches(entry)[-1]
    assert state_of(stored)["search_attributes"] == {"Tag": "blue"}
    assert describe_run(stored)["search_attributes"] == {"Tag": "blue"}
    assert stored_size(stored["tail"]["events"]) == len(stored["tail"]["events"])


def test_a_run_written_before_with_nested_parts_reads_the_same() -> None:
    entry = _entry()
    nested = _state_document(entry, epoch=4) | {
        "state": entry.state.model_dump(mode="json"),
        "outbox": [e.model_dump(mode="json") for e in entry.new_outbox],
        "tail": {"first_event_id": 1, "events": history_batches(entry)[-1]},
    }
    stored = _stored(nested)
    assert RunStore.entry_of(stored).state == entry.state
    assert RunStore.outbox_of(stored) == entry.new_outbox
    assert unpacked(stored["tail"]["events"]) == history_batches(entry)[-1]
    assert state_of(stored)["search_attributes"] == {"Tag": "blue"}
    assert stored_size(stored["tail"]["events"]) == stored_size(
        _stored(_state_document(entry, 4))["tail"]["events"]
    )


def test_an_empty_outbox_and_tail_stay_empty_arrays() -> None:
    entry = _entry()
    entry.new_outbox, entry.new_events = [], []
    stored = _stored(_state_document(entry, epoch=4))
    assert stored["outbox"] == [] and stored["tail"]["events"] == []
    assert RunStore.outbox_of(stored) == [] and state_of({}) == {}
