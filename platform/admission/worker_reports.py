"""The report relay: takes what workers send (a workflow task's commands or failure, an activity's start,
heartbeats and outcome) from each namespace's ``worker-reports`` queue into the cell's partitions.

Workers never write Kafka: this relay does, after checking what they sent. A provisional copy of an
activity's result (sent before the worker goes on with the run's code) is held until the result itself
comes, with the commands that followed it, and relayed only if that does not come within a second.

The namespace of a report is the vhost it arrived on (only the namespace's key reaches it), never a
field of the report; a report that does not parse, or is larger than the namespace's payload limit
allows, goes to the queue's dead letters with the reason logged. Reports are produced in batches and
acknowledged only once Kafka acknowledged them (invariant 1 of docs/architecture.md).

Reports of partitions this process's own engine owns are handed to it instead, when the process is
given a ``local`` engine (``CellEngine.take_reports``): a Kafka round trip less for each activity. Such a
report is acknowledged once the engine wrote what it caused; one the engine does not take goes through
Kafka as any other.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from opentelemetry import metrics, trace
from opentelemetry.context import Context, get_current
from pydantic import ValidationError

from perdure.infra.outages import OUTAGES, dependency_of, pause
from perdure.infra.periodic import every
from perdure.infra.telemetry import extract_amqp_context
from perdure.platform.core import messages as m
from perdure.platform.messaging.amqp_channels import AmqpChannels, cancel_consumers
from perdure.platform.messaging.amqp_dead_letters import dead_letter
from perdure.platform.messaging.amqp_settle import ack, hand_back
from perdure.platform.messaging.task_producer import TaskProducer
from perdure.platform.protocol.cell_wire import TaskEnvelope
from perdure.platform.protocol.vhost_layout import WORKER_REPORTS_DEAD_LETTERS, WORKER_REPORTS_QUEUE
from perdure.platform.protocol.worker_wire import (
    MAX_REPORT_BYTES,
    PROVISIONAL_HEADER,
    WorkerReport,
    result_key,
)
from perdure.platform.stores.control_store import NamespaceRecord
from perdure.platform.stores.namespace_apps import NamespaceApps

log = logging.getLogger("perdure.reports")
tracer = trace.get_tracer("perdure.reports")
meter = metrics.get_meter("perdure.reports")
relayed = meter.create_counter("perdure.reports.relayed", description="worker reports handed to the cell")
refused = meter.create_counter("perdure.reports.refused", description="worker reports dead-lettered")
PREFETCH = 512
BATCH = 500


# A provisional result (``PROVISIONAL_HEADER`` of the worker protocol) waits this long for the result
# it precedes.
PROVISIONAL_HOLD_SECONDS = 1.0
MAX_HELD = 10_000
HeldKey = tuple[str, str]  # namespace, result key
# The engine of this process, taking reports straight: which of them it took.
LocalEngine = Callable[[Sequence[TaskEnvelope], Sequence[Context]], Awaitable[list[bool]]]


@dataclass
class _Received:
    namespace: str
    message: AbstractIncomingMessage
    envelope: TaskEnvelope
    # The provisional copy of this result, settled with it.
    provisional: AbstractIncomingMessage | None = None
    # The trace it was received in (made inside its span): relayed in a batch, each keeps its own.
    trace_context: Context = field(default_factory=get_current)

    async def ack(self) -> None:
        await ack(self.message)
        if self.provisional is not None:
            await ack(self.provisional)

    async def nack(self) -> None:
        await hand_back(self.message)
        if self.provisional is not None:
            await hand_back(self.provisional)


class WorkerReportRelay:
    def __init__(
        self,
        apps: NamespaceApps,
        tasks: TaskProducer,
        channels: AmqpChannels,
        *,
        refresh_seconds: float = 2.0,
        local: LocalEngine | None = None,
    ) -> None:
        self.apps = apps
        self.local = local
        self.tasks = tasks
        self.channels = channels
        self.refresh_seconds = refresh_seconds
        self.stopping = asyncio.Event()
        self._inbox: asyncio.Queue[_Received] = asyncio.Queue()
        self._consuming: dict[str, tuple[AbstractQueue, str]] = {}
        self._vhosts: dict[str, str] = {}  # of the namespaces it consumes, for their dead letters
        self._held: dict[HeldKey, tuple[AbstractIncomingMessage, asyncio.TimerHandle]] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        # Results relayed lately: a provisional copy that comes after its result is dropped.
        self._relayed: collections.OrderedDict[HeldKey, None] = collections.OrderedDict()

    async def run(self) -> None:
        relay = asyncio.create_task(self._relay_loop(), name="report-relay")
        try:
            await every(
                self.refresh_seconds,
                self.stopping,
                self._refresh,
                log,
                "refreshing the namespaces to relay for",
            )
        finally:
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)

    async def stop(self) -> None:
        self.stopping.set()
        await cancel_consumers(self._consuming.values(), "worker reports")
        held = [message for message, _ in self._held.values()]
        for _, timer in self._held.values():
            timer.cancel()
        self._held.clear()
        await asyncio.gather(*self._releasing, return_exceptions=True)
        waiting = []
        while not self._inbox.empty():  # taken but not relayed: delivered again
            waiting.append(self._inbox.get_nowait())
        for received in waiting:
            await received.nack()
        for message in held:
            await hand_back(message)

    async def _refresh(self) -> None:
        records = await self.apps.serving()
        gone = [self._consuming.pop(name) for name in self._consuming.keys() - {r.name for r in records}]
        if gone:
            # Deleted, or being moved: its reports wait in its queue for the cell that serves it next.
            await cancel_consumers(gone, "worker reports")
        for record in records:
            if record.name not in self._consuming:
                await self._consume(record)

    async def _consume(self, record: NamespaceRecord) -> None:
        self._vhosts[record.name] = record.vhost
        channel = await self.channels.connection_channel(record.vhost)
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(WORKER_REPORTS_QUEUE, durable=True, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                await self._receive(record.name, message)
            except Exception as exc:  # back to its queue rather than unacknowledged for ever
                await pause(OUTAGES.failed("taking a worker report", exc, cap=2.0), self.stopping)
                await hand_back(message)

        self._consuming[record.name] = (queue, await queue.consume(on_message))

    async def _receive(self, namespace: str, message: AbstractIncomingMessage) -> None:
        if message.headers.get(PROVISIONAL_HEADER) and message.correlation_id:
            key = (namespace, message.correlation_id)
            if key in self._relayed:
                await ack(message)  # its result came first
                return
            if key not in self._held and len(self._held) < MAX_HELD:
                timer = asyncio.get_running_loop().call_later(PROVISIONAL_HOLD_SECONDS, self._release, key)
                self._held[key] = (message, timer)
                return
        await self._admit(namespace, message)

    def _release(self, key: HeldKey) -> None:
        """The result a provisional copy preceded did not come (its worker died): relay the copy."""
        held = self._held.pop(key, None)
        if held is not None:
            admitting = asyncio.create_task(self._admit(key[0], held[0]))
            self._releasing.add(admitting)
            admitting.add_done_callback(self._releasing.discard)

    async def _admit(self, namespace: str, message: AbstractIncomingMessage) -> None:
        """Check a report and queue it for Kafka (settling the provisional copy of a result with it)."""
        with tracer.start_as_current_span(
            "perdure.reports.receive",
            context=extract_amqp_context(message.headers),
            attributes={"namespace": namespace},
        ):
            if len(message.body) > MAX_REPORT_BYTES:
                await self._refuse(namespace, message, f"report of {len(message.body)} bytes")
                return
            try:
                report = WorkerReport.model_validate_json(message.body)
            except ValidationError as exc:
                await self._refuse(namespace, message, f"malformed report: {str(exc)[:300]}")
                return
            envelope = TaskEnvelope(
                namespace=namespace,
                workflow_id=report.workflow_id,
                run_id=report.message.run_id,
                message=report.message,
            )
            received = _Received(namespace, message, envelope)
            result = report.message
            if isinstance(result, m.ActivityCompleted) and not message.headers.get(PROVISIONAL_HEADER):
                key = (namespace, result_key(result.run_id, result.scheduled_event_id, result.attempt))
                held = self._held.pop(key, None)
                if held is not None:
                    held[1].cancel()
                    received.provisional = held[0]
                self._relayed[key] = None
                while len(self._relayed) > MAX_HELD:
                    self._relayed.popitem(last=False)
            self._inbox.put_nowait(received)

    async def _refuse(self, namespace: str, message: AbstractIncomingMessage, reason: str) -> None:
        refused.add(1, {"namespace": namespace})
        log.warning("worker report dead-lettered", extra={"namespace": namespace, "reason": reason})
        await dead_letter(
            self.channels, self._vhosts[namespace], WORKER_REPORTS_DEAD_LETTERS, message, reason
        )

    async def _relay_loop(self) -> None:
        # The loop must outlive anything one batch meets: reports taken by this process and not relayed
        # would sit unacknowledged, delivered to no one else, for as long as the process lives.
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < BATCH and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            try:
                await self._relay(batch)
            except Exception as exc:
                for received in batch:
                    if not received.message.processed:
                        await received.nack()
                await pause(OUTAGES.failed("relaying worker reports", exc, cap=2.0), self.stopping)

    async def _relay(self, batch: list[_Received]) -> None:
        if self.local is not None:
            batch = await self._hand_over(batch)
            if not batch:
                return
        try:
            await self.tasks.send_all(
                [received.envelope for received in batch], [received.trace_context for received in batch]
            )
        except Exception as exc:
            # One at a time: a report Kafka refuses for good must not hold the others back.
            if dependency_of(exc) is None:
                log.warning("relaying a batch of reports failed; relaying them one by one", exc_info=True)
            await self._relay_one_by_one(batch)
            return
        OUTAGES.succeeded("relaying worker reports", ("kafka",))
        for received in batch:
            await received.ack()
            relayed.add(1, {"namespace": received.namespace})

    async def _hand_over(self, batch: list[_Received]) -> list[_Received]:
        """Hand the batch to the engine of this process; what it did not take, for Kafka."""
        assert self.local is not None
        try:
            taken = await self.local(
                [received.envelope for received in batch], [received.trace_context for received in batch]
            )
        except Exception:
            log.warning("handing reports to the engine failed; relaying them through Kafka", exc_info=True)
            return batch
        rest = []
        for received, was_taken in zip(batch, taken, strict=True):
            if was_taken:
                await received.ack()
                relayed.add(1, {"namespace": received.namespace, "path": "handed"})
            else:
                rest.append(received)
        return rest

    async def _relay_one_by_one(self, batch: list[_Received]) -> None:
        failed: BaseException | None = None
        for received in batch:
            try:
                await self.tasks.send_all([received.envelope], [received.trace_context])
            except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
                await self._refuse(received.namespace, received.message, f"Kafka refused it: {exc}")
                if received.provisional is not None:
                    await self._refuse(received.namespace, received.provisional, "its result was refused")
                continue
            except Exception as exc:
                failed = exc
                await received.nack()  # Kafka is down: delivered again later
                continue
            await received.ack()
            relayed.add(1, {"namespace": received.namespace})
        if failed is not None:
            await pause(OUTAGES.failed("relaying worker reports", failed, cap=2.0), self.stopping)
        else:
            OUTAGES.succeeded("relaying worker reports", ("kafka",))
