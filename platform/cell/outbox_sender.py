"""Sending what transitions put in their outbox, after the history write (invariant 4 of
docs/architecture.md): timers to the owner's memory (their durable copy is the run state just written),
runs to start or cancel and parent notices to Kafka, workflow and activity tasks, close notifications
and the answers to updates' waiters to the namespace's RabbitMQ vhost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aio_pika

from perdure.infra.telemetry import inject_amqp_headers
from perdure.platform.cell.armed_timers import ArmedTimers
from perdure.platform.core import history as h
from perdure.platform.core import outbox as o
from perdure.platform.core.usage import UsageRecord
from perdure.platform.messaging.amqp_channels import AmqpChannels
from perdure.platform.messaging.task_producer import TaskProducer
from perdure.platform.messaging.usage_producer import UsageProducer
from perdure.platform.protocol.cell_wire import TaskEnvelope, execution_key
from perdure.platform.protocol.ingress_wire import IngressReply
from perdure.platform.protocol.vhost_layout import ACTIVITIES_QUEUE, RESULTS_EXCHANGE, WORKFLOW_TASKS_QUEUE
from perdure.platform.protocol.worker_wire import WorkflowActivation
from perdure.platform.stores.run_store import RunStore, partition_of

log = logging.getLogger("perdure.outbox")
# A publish the broker never confirms (a connection half gone) must fail the batch, which is then tried
# again, rather than hold the engine and its partitions for good.
PUBLISH_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class TenantReply:
    """The engine's answer to a tenant's start (once it is written, or refused) or query (once what
    came before it is written)."""

    namespace: str
    reply_to: str
    correlation_id: str | None
    reply: IngressReply

    @classmethod
    def of(cls, envelope: TaskEnvelope, reply: IngressReply) -> TenantReply | None:
        if envelope.reply_to is None:
            return None
        return cls(envelope.namespace, envelope.reply_to, envelope.correlation_id, reply)


@dataclass(frozen=True)
class Addressed:
    """An outbox entry with the run it came from."""

    namespace: str
    workflow_id: str
    partition: int
    entry: o.OutboxEntry


class OutboxSender:
    def __init__(
        self,
        store: RunStore,
        producer: TaskProducer,
        channels: AmqpChannels,
        partitions: int,
        vhost_of: Callable[[str], str],
        timers: ArmedTimers,
        timer_armed: Callable[[], None],
        usage: UsageProducer,
        history_of: Callable[[str], Awaitable[list[h.HistoryEvent]]] | None = None,
    ) -> None:
        self.store = store
        self.history_of = history_of or store.read_history
        self.producer = producer
        self.channels = channels
        self.partitions = partitions
        self.vhost_of = vhost_of
        self.timers = timers
        self.timer_armed = timer_armed
        self.usage = usage

    async def send(self, items: Sequence[Addressed], *, sent_tasks: frozenset[str] = frozenset()) -> None:
        """Send ``items`` (but the workflow tasks in ``sent_tasks``: sent already, within the batch)."""
        created: list[dict[str, object]] = []
        cancelled: list[str] = []
        envelopes: list[TaskEnvelope] = []
        publishes = []
        metered: list[UsageRecord] = []
        for item in items:
            entry = item.entry
            match entry:
                case o.CreateTimer():
                    created.append(
                        RunStore.timer_document(entry, item.partition, item.namespace, item.workflow_id)
                    )
                case o.CancelTimerEntry():
                    cancelled.append(entry.timer_key)
                case o.StartRun():
                    envelopes.append(
                        TaskEnvelope(
                            namespace=entry.namespace,
                            workflow_id=entry.start.workflow_id,
                            run_id=entry.run_id,
                            message=entry.start,
                        )
                    )
                case o.CancelRun():
                    # To the workflow id's latest run (no run id): the request's first_run_id lets it
                    # reach a run that went on from the child (continued as new, reset) and no other.
                    envelopes.append(
                        TaskEnvelope(
                            namespace=entry.namespace, workflow_id=entry.workflow_id, message=entry.request()
                        )
                    )
                case o.NotifyParent():
                    envelopes.append(
                        TaskEnvelope(
                            namespace=entry.parent.namespace,
                            workflow_id=entry.parent.workflow_id,
                            run_id=entry.parent.run_id,
                            message=entry.message,
                        )
                    )
                case o.DispatchActivity():
                    publishes.append(self._publish(entry.namespace, "", ACTIVITIES_QUEUE, entry))
                case o.DispatchWorkflowTask():
                    if entry.task_id not in sent_tasks or not entry.task_id:
                        publishes.append(self.send_workflow_task(entry))
                case o.RunClosed():
                    publishes.append(
                        self._publish(entry.namespace, RESULTS_EXCHANGE, entry.routing_key, entry)
                    )
                case o.UpdateReply():
                    publishes.append(self._answer_update(entry))
                case o.RecordUsage():
                    metered.extend(entry.records)
                case o.CancelActivityTask():
                    pass  # best effort only: a late result of a cancelled activity is ignored by the engine
        for key in cancelled:
            self.timers.cancel(key)
        for document in created:
            self.timers.arm(document)
        if created:
            self.timer_armed()
        await asyncio.gather(self.producer.send_all(envelopes), self.usage.send_all(metered), *publishes)

    async def reply(self, replies: Sequence[TenantReply | None]) -> None:
        """Best effort: a client that misses its answer times out and retries with the same request id,
        which is answered from the run that exists."""
        for answer in replies:
            if answer is None:
                continue
            try:
                channel = await self.channels.channel(self.vhost_of(answer.namespace))
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        answer.reply.model_dump_json().encode(),
                        content_type="application/json",
                        correlation_id=answer.correlation_id,
                        headers=inject_amqp_headers({}),
                    ),
                    routing_key=answer.reply_to,
                    timeout=PUBLISH_TIMEOUT_SECONDS,
                )
            except Exception:
                log.warning("answering a tenant failed", exc_info=True)

    async def _answer_update(self, answer: o.UpdateReply) -> None:
        """To each waiter's reply queue. Best effort, as the answers to starts: a waiter that misses its
        answer (a lost connection, a reply queue gone) asks again under the update's id, and the run
        answers from what it recorded."""
        body = IngressReply.of_update(answer).model_dump_json().encode()
        for waiter in answer.waiters:
            try:
                channel = await self.channels.channel(self.vhost_of(answer.namespace))
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type="application/json",
                        correlation_id=waiter.correlation_id,
                        headers=inject_amqp_headers({}),
                    ),
                    routing_key=waiter.reply_to,
                    timeout=PUBLISH_TIMEOUT_SECONDS,
                )
            except Exception:
                log.warning("answering an update's waiter failed", exc_info=True)

    async def send_workflow_task(self, task: o.DispatchWorkflowTask, reply_to: str | None = None) -> None:
        """To the worker holding the run's instance (sticky), else to any of the namespace's workers;
        answered to ``reply_to`` if given, else through the namespace's worker reports. The task expires
        when its timeout does: by then the engine has sent it again, with the whole history, and a
        worker need not spend time on the stale copy."""
        events: list[h.HistoryEvent] = []
        if task.last_event_id >= task.first_event_id:
            history = await self.history_of(task.run_id)
            events = list(history[task.first_event_id - 1 : task.last_event_id])
        body = WorkflowActivation(task=task, events=events).model_dump_json().encode()
        channel = await self.channels.channel(self.vhost_of(task.namespace))
        message = aio_pika.Message(
            body,
            content_type="application/json",
            type=task.kind,
            reply_to=reply_to,
            correlation_id=task.task_id or None,
            expiration=max(task.timeout_seconds, 1.0),
            headers=inject_amqp_headers({"perdure-version": "1"}),
        )
        await channel.default_exchange.publish(
            message, routing_key=task.sticky_queue or WORKFLOW_TASKS_QUEUE, timeout=PUBLISH_TIMEOUT_SECONDS
        )

    async def _publish(self, namespace: str, exchange: str, routing_key: str, entry: o.OutboxEntry) -> None:
        channel = await self.channels.channel(self.vhost_of(namespace))
        message = aio_pika.Message(
            entry.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type=entry.kind,
            headers=inject_amqp_headers({"perdure-version": "1"}),
        )
        target = (
            channel.default_exchange if not exchange else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(message, routing_key=routing_key, timeout=PUBLISH_TIMEOUT_SECONDS)

    def partition_for(self, namespace: str, workflow_id: str) -> int:
        return partition_of(execution_key(namespace, workflow_id), self.partitions)
