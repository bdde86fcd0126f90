"""The cell's engine and its consumer, restartable in place. A restart finishes the batch in flight,
commits, leaves the consumer group (the partitions go to the group's other members, and back to this
process once it joins again) and starts a fresh consumer and engine: what a rollout asks of a cell
process when the cell's desired version changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer
from opentelemetry.context import Context

from perdure.infra.kafka_backoff import with_reconnect_backoff
from perdure.infra.settings import Settings
from perdure.platform.cell.engine import CellEngine
from perdure.platform.cell.inline_decisions import InlineDecisions
from perdure.platform.cell.outbox_sender import OutboxSender
from perdure.platform.messaging.task_producer import TaskProducer
from perdure.platform.protocol.cell_wire import TaskEnvelope, engine_group
from perdure.platform.stores.control_store import CellRecord
from perdure.platform.stores.namespace_apps import NamespaceApps
from perdure.platform.stores.run_store import RunStore

log = logging.getLogger("perdure.cell")


class EngineRunner:
    def __init__(
        self,
        settings: Settings,
        cell: CellRecord,
        store: RunStore,
        apps: NamespaceApps,
        tasks: TaskProducer,
        sender: OutboxSender,
        *,
        unbilled_workflow_types: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        self.unbilled_workflow_types = unbilled_workflow_types
        self.cell = cell
        self.store = store
        self.apps = apps
        self.tasks = tasks
        self.sender = sender
        self.engine: CellEngine | None = None
        self.inline: InlineDecisions | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None
        self._crash: BaseException | None = None
        self._crashed = asyncio.Event()

    def _consumer(self) -> AIOKafkaConsumer:
        timeout = self.settings.engine_session_timeout_ms
        consumer = AIOKafkaConsumer(
            **self.settings.endpoints(self.cell.name).kafka(),
            group_id=engine_group(self.cell.name),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            max_poll_records=500,
            session_timeout_ms=timeout,
            heartbeat_interval_ms=min(1_000, timeout // 3),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # A group formed while a broker's metadata lacked the topic's partitions gets them at the
            # next refresh: within half a minute rather than aiokafka's default five.
            metadata_max_age_ms=30_000,
        )
        return with_reconnect_backoff(consumer)

    async def start(self) -> None:
        self.consumer = self._consumer()
        self.inline = InlineDecisions(self.sender.channels, self.tasks, self.apps.namespace_of_vhost)
        self.engine = CellEngine(
            self.cell,
            self.store,
            self.apps,
            self.tasks,
            self.sender,
            self.consumer,
            inline=self.inline,
            inline_seconds=self.settings.inline_decision_ms / 1000,
            unbilled_workflow_types=self.unbilled_workflow_types,
        )
        self.sender.timer_armed = self.engine.timer_armed
        self.sender.history_of = self.engine.history_of
        self.engine.subscribe()
        try:
            await self.consumer.start()
        except BaseException:
            # Kafka unreachable: nothing is left running, and a start again begins afresh.
            await self.consumer.stop()
            await self.inline.close()
            self.engine = self.consumer = self.inline = None
            raise
        self.task = asyncio.create_task(self.engine.run(), name="engine")
        self.task.add_done_callback(self._ended)

    async def follow_namespaces(self) -> None:
        """Take the namespaces' records as they are now, and tell the engine which arrived and which
        left (a move); run every few seconds."""
        changes = await self.apps.refresh()
        if self.engine is not None:
            await self.engine.namespaces_changed(changes)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._crash = task.exception()
            self._crashed.set()

    async def supervise(self) -> None:
        """Wait while the engine runs (through restarts); raise what it raised if it crashed."""
        await self._crashed.wait()
        assert self._crash is not None
        raise self._crash

    async def stop(self) -> None:
        if self.engine is None or self.consumer is None or self.task is None:
            return
        self.engine.stopping.set()
        await asyncio.gather(self.task, return_exceptions=True)
        if self.inline is not None:
            await self.inline.close()
        await self.consumer.stop()  # commits were made per batch; this leaves the group
        self.engine = self.consumer = self.task = None

    async def restart(self) -> None:
        log.info("restarting the engine", extra={"cell": self.cell.name})
        await self.stop()
        await self.start()

    async def take_reports(
        self, envelopes: Sequence[TaskEnvelope], contexts: Sequence[Context]
    ) -> list[bool]:
        """Hand reports to the engine running now (``CellEngine.take_reports``); none taken between two."""
        engine = self.engine
        if engine is None:
            return [False] * len(envelopes)
        return await engine.take_reports(envelopes, contexts)

    def owned(self) -> list[int]:
        return sorted(self.engine.epochs) if self.engine is not None else []

    def error_rate(self) -> float:
        outcomes = self.engine.outcomes if self.engine is not None else ()
        return sum(outcomes) / len(outcomes) if outcomes else 0.0

    def alive(self) -> bool:
        return self.task is not None and not self.task.done()
