"""What one run document costs the database: its insert and the engine's conditional update, as written
now (state, tail and outbox opaque: ``platform/stores/run_bodies.py``) and as written before (the same
parts nested), in a scratch database of the stack's MongoDB-protocol server with the runs' indexes.

The document is a ``ThreeNoops`` run after its first round (``bench.throughput_app``): its state with a
pending activity, the round's events as its tail, the activity's dispatch as its outbox. The two forms
alternate, run by run, so both meet the machine in the same moods.

Run: .venv/bin/python -m bench.run_document_writes [--runs 150]   (needs ``perdure stack up``)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import bson
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from bench.machine import describe_machine
from bench.throughput_app import ThreeNoops, app
from perdure.infra.settings import load_settings
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.state_machine import ExecutionStateMachine
from perdure.platform.core.workflow_activations import WorkflowActivations
from perdure.platform.stores.run_store import RunEntry, RunStore, _state_document, history_batches

Document = dict[str, Any]


def first_round() -> RunEntry:
    """A ``ThreeNoops`` run after its start and first workflow task, as the engine writes it."""
    machine = ExecutionStateMachine(clock=lambda: datetime.now(UTC), new_id=lambda: str(uuid.uuid4()))
    message = m.StartWorkflow(request_id="r", workflow_type=ThreeNoops.__name__, workflow_id="w", input=[])
    started = machine.start("bench", message)
    task = next(e for e in started.outbox if isinstance(e, o.DispatchWorkflowTask))
    reply = WorkflowActivations(app).activate(task, started.events).reply
    assert reply is not None
    decided = machine.handle(started.state, reply)
    entry = RunEntry(state=decided.state, partition=0, persisted_next_event_id=1)
    entry.new_events = [*started.events, *decided.events]
    entry.new_outbox = [e for e in decided.outbox if not isinstance(e, o.DispatchWorkflowTask)]
    return entry


def nested(document: Document, entry: RunEntry) -> Document:
    """The same document with its parts nested, as written before they were opaque."""
    return document | {
        "state": entry.state.model_dump(mode="json"),
        "tail": {"first_event_id": 1, "events": history_batches(entry)[-1]},
        "outbox": [e.model_dump(mode="json") for e in entry.new_outbox],
    }


async def timed(operation: Callable[[], Awaitable[Any]]) -> float:
    began = time.perf_counter()
    await operation()
    return (time.perf_counter() - began) * 1000


async def measure(runs: int) -> None:
    settings = load_settings()
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri)
    database = f"bench_documents_{uuid.uuid4().hex[:8]}"
    entry = first_round()
    forms = {"opaque (now)": _state_document(entry, epoch=1)}
    forms["nested (before)"] = nested(forms["opaque (now)"], entry)
    try:
        collections: dict[str, AsyncCollection[Document]] = {}
        for name in forms:
            store = RunStore(client[database])
            store.runs = client[database][f"runs_{len(collections)}"]
            await store.ensure_indexes()
            collections[name] = store.runs
        inserts: dict[str, list[float]] = {name: [] for name in forms}
        updates: dict[str, list[float]] = {name: [] for name in forms}
        for i in range(runs):
            for name, document in forms.items():
                runs_of = collections[name]
                run_id = f"run-{i}"
                inserts[name].append(await timed(partial(runs_of.insert_one, {"_id": run_id, **document})))
                condition = {"_id": run_id, "next_event_id": document["next_event_id"], "epoch": {"$lte": 1}}
                changed = document | {"next_event_id": document["next_event_id"] + 1}
                updates[name].append(await timed(partial(runs_of.update_one, condition, {"$set": changed})))
        print(f"machine: {describe_machine()}")
        print(f"{runs} runs of each form, alternating; the runs' indexes present")
        print("| form | document | insert p50 | insert p90 | update p50 | update p90 |")
        print("|---|---|---|---|---|---|")
        for name, document in forms.items():
            size = len(bson.encode({"_id": "run-0", **document}))
            ins, upd = sorted(inserts[name]), sorted(updates[name])
            print(
                f"| {name} | {size / 1024:.1f} KB | {statistics.median(ins):.2f} ms | "
                f"{ins[int(len(ins) * 0.9)]:.2f} ms | {statistics.median(upd):.2f} ms | "
                f"{upd[int(len(upd) * 0.9)]:.2f} ms |"
            )
    finally:
        await client.drop_database(database)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=150)
    arguments = parser.parse_args()
    asyncio.run(measure(arguments.runs))


if __name__ == "__main__":
    main()
