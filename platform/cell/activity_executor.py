"""Platform-run activity executors: consume each namespace's ``activities`` queue, run the app's
activity, and send its start, heartbeats and outcome to the engine through Kafka.

Tasks are run under the namespace's quota, as admission admits work: a token bucket per namespace
(actions per second and burst), at most ``max_concurrent_activities`` attempts of a namespace at once,
and the process's slots shared by weight (deficit round robin) when namespaces compete for them. A task
waiting its turn stays unacknowledged, within a bounded prefetch; the rest waits in RabbitMQ.

A task is acknowledged when it is taken (after its start reached Kafka, where a schedule-to-start timeout
needs it): from then on a crash of this executor is noticed by the activity's timeouts (start-to-close,
armed at dispatch, and heartbeat) and retried by the engine, not redelivered.
The namespace comes from the vhost the task was read from, never from the task itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from opentelemetry import metrics, trace
from pydantic import ValidationError

from perdure.infra.telemetry import extract_amqp_context
from perdure.platform.cell.amqp_channels import AmqpChannels
from perdure.platform.cell.control_store import NamespaceRecord
from perdure.platform.cell.namespace_apps import NamespaceApps, NamespaceUnavailable
from perdure.platform.cell.task_producer import TaskProducer
from perdure.platform.cell.wire import TaskEnvelope
from perdure.platform.core import messages as m
from perdure.platform.core.activity_invocation import invoke_activity
from perdure.platform.core.outbox import DispatchActivity
from perdure.platform.core.payloads import Payload, default_converter
from perdure.platform.quotas.fair_queue import FairQueue
from perdure.platform.tenancy.vhost_layout import ACTIVITIES_QUEUE

log = logging.getLogger("perdure.executor")
tracer = trace.get_tracer("perdure.executor")
meter = metrics.get_meter("perdure.executor")
executions = meter.create_counter("perdure.activities.executed", description="activity attempts run")
waiting_seconds = meter.create_histogram(
    "perdure.activities.wait_seconds", unit="s", description="time a task waited for its namespace's turn"
)


@dataclass
class _Waiting:
    message: AbstractIncomingMessage
    task: DispatchActivity
    arrived: float


class ActivityExecutors:
    def __init__(
        self,
        apps: NamespaceApps,
        tasks: TaskProducer,
        channels: AmqpChannels,
        *,
        slots: int = 256,
        refresh_seconds: float = 2.0,
    ) -> None:
        self.apps = apps
        self.tasks = tasks
        self.channels = channels
        self.slots = slots
        self.refresh_seconds = refresh_seconds
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.queue: FairQueue[_Waiting] = FairQueue()
        self._consuming: dict[str, tuple[AbstractChannel, aio_pika.abc.AbstractQueue, str]] = {}
        self._limits: dict[str, int] = {}  # max concurrent attempts per namespace
        self._running_in: collections.Counter[str] = collections.Counter()
        self._running: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self.stopping = asyncio.Event()

    def running(self, namespace: str) -> int:
        return self._running_in[namespace]

    async def run(self) -> None:
        """Follow the cell's namespaces (new ones are picked up, quota changes applied) until stopped."""
        dispatcher = asyncio.create_task(self._dispatch_loop(), name="activity-dispatch")
        try:
            while not self.stopping.is_set():
                try:
                    records = await self.apps.all()
                    for gone in self._consuming.keys() - {record.name for record in records}:
                        del self._consuming[gone]
                        await self.channels.forget(gone)  # deleted: its vhost's connection closes
                        log.info("no longer serving activities", extra={"namespace": gone})
                    for record in records:
                        await self._follow(record)
                except Exception:
                    log.exception("refreshing the namespaces to serve failed; retrying")
                try:
                    await asyncio.wait_for(self.stopping.wait(), self.refresh_seconds)
                except TimeoutError:
                    pass
        finally:
            dispatcher.cancel()
            await asyncio.gather(dispatcher, return_exceptions=True)

    async def _follow(self, record: NamespaceRecord) -> None:
        quota = record.quota
        self.queue.configure(
            record.name, rate=quota.actions_per_second, burst=quota.burst, weight=quota.weight
        )
        limit = quota.max_concurrent_activities
        changed = self._limits.get(record.name) != limit
        self._limits[record.name] = limit
        if record.name not in self._consuming:
            await self._consume(record.name, record.vhost)
        elif changed:
            await self._consuming[record.name][0].set_qos(prefetch_count=self._prefetch(record.name))
        if changed:
            self._wakeup.set()

    def _prefetch(self, namespace: str) -> int:
        # What may wait here for its turn: twice what the namespace could run at once, so its lane is
        # not empty (and its turn lost) while RabbitMQ refills it after the acknowledgements.
        return 2 * min(self._limits[namespace], self.slots)

    async def _consume(self, namespace: str, vhost: str) -> None:
        channel = await self.channels.connection_channel(vhost)
        await channel.set_qos(prefetch_count=self._prefetch(namespace))
        queue = await channel.declare_queue(ACTIVITIES_QUEUE, durable=True, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._receive(namespace, message)

        tag = await queue.consume(on_message)
        self._consuming[namespace] = (channel, queue, tag)
        log.info("serving activities", extra={"namespace": namespace})

    async def stop(self) -> None:
        """Stop taking tasks, hand back the ones waiting, and let the ones running finish."""
        self.stopping.set()
        for _, queue, tag in self._consuming.values():
            try:
                await queue.cancel(tag)
            except Exception:
                log.warning("cancelling a consumer failed", exc_info=True)
        for _, waiting in self.queue.drain():
            try:
                await waiting.message.nack(requeue=True)
            except Exception:
                log.warning("handing back a waiting task failed", exc_info=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _receive(self, namespace: str, message: AbstractIncomingMessage) -> None:
        try:
            task = DispatchActivity.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning(
                "malformed activity task dead-lettered", extra={"namespace": namespace, "error": str(exc)}
            )
            await message.reject(requeue=False)
            return
        if task.namespace != namespace:
            log.warning(
                "activity task names another namespace; dead-lettered", extra={"namespace": namespace}
            )
            await message.reject(requeue=False)
            return
        self.queue.put(namespace, _Waiting(message, task, time.monotonic()))
        self._wakeup.set()

    # -- taking turns -------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while not self.stopping.is_set():
            now = time.monotonic()
            room = {name: limit - self._running_in[name] for name, limit in self._limits.items()}
            free = self.slots - len(self._running)
            taken = self.queue.take(now, free, room) if free > 0 else []
            for namespace, waiting in taken:
                waiting_seconds.record(now - waiting.arrived, {"namespace": namespace})
                self._start(namespace, waiting)
            if taken:
                continue
            # Nothing may start now: wait for a task to finish or arrive, or for tokens.
            delay = self.queue.next_ready_in(now, room) if free > 0 else None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), 1.0 if delay is None else max(delay, 0.001))
            except TimeoutError:
                pass

    def _start(self, namespace: str, waiting: _Waiting) -> None:
        self._running_in[namespace] += 1
        task = asyncio.create_task(self._execute(namespace, waiting.message, waiting.task))
        self._running.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._running.discard(done)
            self._running_in[namespace] -= 1
            self._wakeup.set()
            if not done.cancelled() and done.exception() is not None:
                log.error("running an activity task failed", exc_info=done.exception())

        task.add_done_callback(finished)

    async def _execute(
        self, namespace: str, message: AbstractIncomingMessage, task: DispatchActivity
    ) -> None:
        try:
            loaded = await self.apps.get(namespace)
        except NamespaceUnavailable as exc:
            log.error(
                "cannot run activities of this namespace", extra={"namespace": namespace, "error": str(exc)}
            )
            await message.reject(requeue=True)
            await asyncio.sleep(1)
            return
        context = extract_amqp_context(message.headers)
        with tracer.start_as_current_span(
            "perdure.activity",
            context=context,
            attributes={"namespace": namespace, "activity": task.activity_type, "attempt": task.attempt},
        ):
            try:
                if task.options.schedule_to_start_timeout is not None:
                    # Only then does the engine need to hear of the start before the outcome: otherwise
                    # the start is recorded with the outcome (or the first heartbeat), one round fewer.
                    await self.tasks.send(
                        self._envelope(
                            task,
                            m.ActivityStarted(
                                run_id=task.run_id,
                                scheduled_event_id=task.scheduled_event_id,
                                attempt=task.attempt,
                                identity=self.identity,
                            ),
                        )
                    )
            except Exception:
                await message.nack(requeue=True)  # not taken after all: it is delivered again
                raise
            await message.ack()
            heartbeats = _HeartbeatSender(self, task)
            outcome = await invoke_activity(task, loaded.machine.registry, default_converter, heartbeats.beat)
            await heartbeats.drain()
            await self.tasks.send(self._envelope(task, outcome))
            executions.add(1, {"namespace": namespace, "outcome": outcome.kind})

    @staticmethod
    def _envelope(task: DispatchActivity, message: Any) -> TaskEnvelope:
        return TaskEnvelope(
            namespace=task.namespace, workflow_id=task.workflow_id, run_id=task.run_id, message=message
        )


class _HeartbeatSender:
    """Coalesces heartbeats: at most one in flight, the newest details win."""

    def __init__(self, executors: ActivityExecutors, task: DispatchActivity) -> None:
        self.executors = executors
        self.task = task
        self.loop = asyncio.get_running_loop()
        self.pending: list[Payload] | None = None
        self.sending: asyncio.Task[None] | None = None
        self.sent = 0

    def beat(self, details: list[Payload]) -> None:
        # Sync activities call this from their worker thread.
        self.loop.call_soon_threadsafe(self._schedule, details)

    def _schedule(self, details: list[Payload]) -> None:
        self.pending = details
        if self.sending is None or self.sending.done():
            self.sending = self.loop.create_task(self._send())

    async def _send(self) -> None:
        while self.pending is not None:
            details, self.pending = self.pending, None
            self.sent += 1
            await self.executors.tasks.send(
                ActivityExecutors._envelope(
                    self.task,
                    m.ActivityHeartbeat(
                        run_id=self.task.run_id,
                        scheduled_event_id=self.task.scheduled_event_id,
                        attempt=self.task.attempt,
                        details=details,
                        sequence=self.sent,
                    ),
                )
            )

    async def drain(self) -> None:
        await asyncio.sleep(0)  # let heartbeats scheduled from a worker thread reach the loop
        if self.sending is not None:
            await self.sending
