"""Platform-run activity executors: consume each namespace's ``activities`` queue, run the app's
activity, and send its start, heartbeats and outcome to the engine through Kafka.

A task is acknowledged when it is taken (after its start reached Kafka, where a schedule-to-start timeout
needs it): from then on a crash of this executor is noticed by the activity's timeouts (start-to-close,
armed at dispatch, and heartbeat) and retried by the engine, not redelivered.
The namespace comes from the vhost the task was read from, never from the task itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import metrics, trace
from pydantic import ValidationError

from perdure.infra.telemetry import extract_amqp_context
from perdure.platform.cell.amqp_channels import AmqpChannels
from perdure.platform.cell.namespace_apps import NamespaceApps, NamespaceUnavailable
from perdure.platform.cell.task_producer import TaskProducer
from perdure.platform.cell.wire import TaskEnvelope
from perdure.platform.core import messages as m
from perdure.platform.core.activity_invocation import invoke_activity
from perdure.platform.core.outbox import DispatchActivity
from perdure.platform.core.payloads import Payload, default_converter
from perdure.platform.tenancy.vhost_layout import ACTIVITIES_QUEUE

log = logging.getLogger("perdure.executor")
tracer = trace.get_tracer("perdure.executor")
meter = metrics.get_meter("perdure.executor")
executions = meter.create_counter("perdure.activities.executed", description="activity attempts run")


class ActivityExecutors:
    def __init__(
        self,
        apps: NamespaceApps,
        tasks: TaskProducer,
        channels: AmqpChannels,
        *,
        prefetch: int = 64,
        refresh_seconds: float = 2.0,
    ) -> None:
        self.apps = apps
        self.tasks = tasks
        self.channels = channels
        self.prefetch = prefetch
        self.refresh_seconds = refresh_seconds
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self._consuming: dict[str, tuple[aio_pika.abc.AbstractQueue, str]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        """Follow the cell's namespaces (new ones are picked up) until stopped."""
        while not self.stopping.is_set():
            try:
                for record in await self.apps.all():
                    if record.name not in self._consuming:
                        await self._consume(record.name, record.vhost)
            except Exception:
                log.exception("refreshing the namespaces to serve failed; retrying")
            try:
                await asyncio.wait_for(self.stopping.wait(), self.refresh_seconds)
            except TimeoutError:
                pass

    async def _consume(self, namespace: str, vhost: str) -> None:
        channel = await self.channels.connection_channel(vhost)
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.declare_queue(ACTIVITIES_QUEUE, durable=True, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await self._execute(namespace, message)
            finally:
                if task is not None:
                    self._running.discard(task)

        tag = await queue.consume(on_message)
        self._consuming[namespace] = (queue, tag)
        log.info("serving activities", extra={"namespace": namespace})

    async def stop(self) -> None:
        """Stop taking tasks and let the ones in flight finish."""
        self.stopping.set()
        for queue, tag in self._consuming.values():
            try:
                await queue.cancel(tag)
            except Exception:
                log.warning("cancelling a consumer failed", exc_info=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _execute(self, namespace: str, message: AbstractIncomingMessage) -> None:
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
            if task.options.schedule_to_start_timeout is not None:
                # Only then does the engine need to hear of the start before the outcome: otherwise the
                # start is recorded with the outcome (or the first heartbeat), one engine round fewer.
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
            await self.executors.tasks.send(
                ActivityExecutors._envelope(
                    self.task,
                    m.ActivityHeartbeat(
                        run_id=self.task.run_id,
                        scheduled_event_id=self.task.scheduled_event_id,
                        attempt=self.task.attempt,
                        details=details,
                    ),
                )
            )

    async def drain(self) -> None:
        await asyncio.sleep(0)  # let heartbeats scheduled from a worker thread reach the loop
        if self.sending is not None:
            await self.sending
