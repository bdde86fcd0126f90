"""The cell's Kafka protocol: one versioned envelope per message on the tasks topic, and the record
that lands on the dead-letter topic. Kind and trace context ride in headers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Literal

from aiokafka import ConsumerRecord
from pydantic import BaseModel, ConfigDict, ValidationError

from perdure.platform.core.messages import RunMessage
from perdure.platform.core.start_rules import IdReusePolicy

WIRE_VERSION = 1
# A refusal's reason quotes what was refused at most this far: a hostile message's reason (a 300 kB
# discriminator, say) must not become a 300 kB dead letter, reply or log line.
MAX_REASON_CHARS = 1000
KIND_HEADER = "perdure-kind"
VERSION_HEADER = "perdure-version"


def engine_group(cell: str) -> str:
    """The consumer group of a cell's engines: its processes share its partitions."""
    return f"perdure.cell.{cell}.engine"


def tasks_topic(cell: str) -> str:
    return f"perdure.cell.{cell}.tasks"


def dlq_topic(cell: str) -> str:
    return f"perdure.cell.{cell}.dlq"


def execution_key(namespace: str, workflow_id: str) -> bytes:
    """All messages of one workflow execution share a key, hence a partition and an order."""
    return f"{namespace}/{workflow_id}".encode()


class TaskEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    namespace: str
    workflow_id: str
    # The run a message is for, when it is bound to one (activity results, timers, child notices).
    run_id: str | None = None
    message: RunMessage
    id_reuse_policy: IdReusePolicy = "allow_duplicate"
    # Where the engine answers a tenant's start once it is written or refused (the client's reply
    # queue in the namespace's vhost, and the request's correlation id); None when nobody waits.
    reply_to: str | None = None
    correlation_id: str | None = None

    @property
    def key(self) -> bytes:
        return execution_key(self.namespace, self.workflow_id)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


class UndecodableMessage(ValueError):
    """A tasks-topic record the engine cannot read; it goes to the dead-letter topic with this reason."""


def decode_envelope(value: bytes | None, key: bytes | None) -> TaskEnvelope:
    if value is None:
        raise UndecodableMessage("empty record (tombstone) on the tasks topic")
    try:
        envelope = TaskEnvelope.model_validate_json(value)
    except ValidationError as exc:
        version = _version_of(value)
        if version is not None and version != WIRE_VERSION:
            raise UndecodableMessage(
                f"unknown envelope version {version} (this engine reads {WIRE_VERSION})"
            ) from None
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise UndecodableMessage(f"malformed envelope: {where}: {first['msg']}") from None
    if key is not None and key != envelope.key:
        raise UndecodableMessage(f"record key {key!r} does not match its execution {envelope.key!r}")
    return envelope


def _version_of(value: bytes) -> object:
    import json

    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data.get("version") if isinstance(data, dict) else None


class DeadLetter(BaseModel):
    """What the DLQ topic holds: the original record, where it came from, and why it was refused."""

    model_config = ConfigDict(frozen=True)

    id: str  # "<topic>:<partition>:<offset>" of the original record
    topic: str
    partition: int
    offset: int
    key: str | None
    value_b64: str
    headers: dict[str, str]
    reason: str
    dead_lettered_at: datetime

    @property
    def value(self) -> bytes:
        return base64.b64decode(self.value_b64)

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes], reason: str) -> DeadLetter:
        """The letter for a record a consumer refused, stamped now."""
        return cls(
            id=f"{record.topic}:{record.partition}:{record.offset}",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode(errors="replace") if record.key is not None else None,
            value_b64=base64.b64encode(record.value or b"").decode(),
            headers={k: v.decode(errors="replace") for k, v in record.headers or [] if v is not None},
            reason=reason[:MAX_REASON_CHARS],
            dead_lettered_at=datetime.now(UTC),
        )
