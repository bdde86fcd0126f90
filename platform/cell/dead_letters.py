"""Reading a cell's dead letters (the DLQ topic and the parked runs) and sending them back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from perdure.infra.settings import Settings
from perdure.infra.topic_contents import records_so_far
from perdure.platform.core import messages as m
from perdure.platform.messaging.task_producer import TaskProducer, new_producer
from perdure.platform.protocol.cell_wire import DeadLetter, TaskEnvelope
from perdure.platform.stores.control_store import CellRecord
from perdure.platform.stores.databases import Databases


@dataclass(frozen=True)
class ParkedRun:
    namespace: str
    workflow_id: str
    run_id: str
    reason: str

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.workflow_id}"


async def read_dead_letters(settings: Settings, cell: CellRecord) -> list[DeadLetter]:
    return await read_letters(settings.endpoints(cell.name).kafka(), cell.dlq_topic)


async def read_letters(kafka: dict[str, Any], topic: str) -> list[DeadLetter]:
    """Every letter of a dead-letter topic (the cell's, or metering's), oldest first per partition."""
    return [DeadLetter.model_validate_json(r.value) for r in await records_so_far(kafka, topic) if r.value]


async def parked_runs(databases: Databases, settings: Settings, cell: CellRecord) -> list[ParkedRun]:
    documents = await databases.runs(settings, cell.name).blocked_runs()
    return [
        ParkedRun(d["namespace"], d["workflow_id"], d["_id"], d.get("blocked_reason") or "")
        for d in documents
    ]


async def redrive(settings: Settings, cell: CellRecord, only: str | None = None) -> dict[str, Any]:
    """Send dead letters back to the tasks topic and ask parked runs to replay with the current code."""
    databases = Databases.connect(settings, cell.name)
    producer = new_producer(settings.endpoints(cell.name))
    await producer.start()
    tasks = TaskProducer(producer, cell.name)
    redriven = databases.client[settings.cell_database(cell.name)]["dlq_redriven"]
    try:
        done_ids = {d["_id"] async for d in redriven.find({}, {"_id": 1})}
        letters = [
            letter
            for letter in await read_dead_letters(settings, cell)
            if (only is None and letter.id not in done_ids) or letter.id == only
        ]
        for letter in letters:
            headers = [(k, v.encode()) for k, v in letter.headers.items()]
            key = letter.key.encode() if letter.key is not None else None
            await producer.send_and_wait(cell.topic, letter.value, key=key, headers=headers)
            await redriven.update_one({"_id": letter.id}, {"$set": {"at": datetime.now(UTC)}}, upsert=True)
        runs = [r for r in await parked_runs(databases, settings, cell) if only is None or r.id == only]
        await tasks.send_all(
            [
                TaskEnvelope(
                    namespace=r.namespace,
                    workflow_id=r.workflow_id,
                    message=m.RedriveRun(request_id=f"redrive-{r.run_id}-{datetime.now(UTC).isoformat()}"),
                )
                for r in runs
            ]
        )
        return {"dead_letters": [letter.id for letter in letters], "runs": [r.id for r in runs]}
    finally:
        await producer.stop()
        await databases.close()


async def redriven_ids(settings: Settings, cell: CellRecord) -> set[str]:
    databases = Databases.connect(settings, cell.name)
    try:
        collection = databases.client[settings.cell_database(cell.name)]["dlq_redriven"]
        return {d["_id"] async for d in collection.find({}, {"_id": 1})}
    finally:
        await databases.close()
