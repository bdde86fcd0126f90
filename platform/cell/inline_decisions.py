"""Workflow tasks answered within the engine's batch: the partition owner sends the batch's workflow
tasks with a reply address of its own, waits a short while for the workers' commands, and records them
in the same write as the events that caused them. A workflow step then costs one engine batch, as it did
when the code ran in the engine, instead of two.

A task not answered within the wait stays in flight as any other: its answer, when it comes, is handed
to the run's partition through Kafka like every report, and the task's timeout still guards it. A
worker never learns more than it would otherwise (the events of its own run), and a slow one delays the
batch by the wait at most (``PERDURE_INLINE_DECISION_MS``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from perdure.platform.core import messages as m
from perdure.platform.messaging.amqp_channels import AmqpChannels
from perdure.platform.messaging.amqp_dead_letters import park
from perdure.platform.messaging.task_producer import TaskProducer
from perdure.platform.protocol.cell_wire import TaskEnvelope
from perdure.platform.protocol.vhost_layout import WORKER_REPORTS_DEAD_LETTERS
from perdure.platform.protocol.worker_wire import MAX_REPORT_BYTES, WorkerReport

log = logging.getLogger("perdure.engine")
MAX_LATE_IN_FLIGHT = 1000
Reply = m.WorkflowTaskCompleted | m.WorkflowTaskFailed


class InlineDecisions:
    def __init__(
        self, channels: AmqpChannels, tasks: TaskProducer, namespace_of: Callable[[str], str]
    ) -> None:
        self.channels = channels
        self.tasks = tasks
        self.namespace_of = namespace_of  # the namespace a vhost belongs to
        self.name = f"engine-replies.{secrets.token_hex(8)}"
        self._queues: dict[str, AbstractQueue] = {}
        # Keyed by vhost too: a worker answers only tasks of its own namespace.
        self._awaiting: dict[tuple[str, str], asyncio.Future[Reply]] = {}
        self._late: set[asyncio.Task[None]] = set()

    async def reply_queue(self, vhost: str) -> str:
        """This process's reply queue in ``vhost`` (made on first use; it dies with the process)."""
        if vhost not in self._queues:
            channel = await self.channels.connection_channel(vhost)
            queue = await channel.declare_queue(self.name, exclusive=True, auto_delete=True)

            async def on_reply(message: AbstractIncomingMessage) -> None:
                await self._receive(vhost, message)

            await queue.consume(on_reply, no_ack=True)
            self._queues[vhost] = queue
        return self.name

    def expect(self, vhost: str, task_id: str) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._awaiting[(vhost, task_id)] = future
        return future

    async def wait(
        self, futures: dict[str, tuple[str, asyncio.Future[Reply]]], deadline: float
    ) -> dict[str, Reply]:
        """The replies (by task id; ``futures`` holds each task's vhost and future) that came before
        ``deadline`` (a ``time.monotonic()``); the others are late."""
        remaining = deadline - time.monotonic()
        if futures and remaining > 0:
            await asyncio.wait([future for _, future in futures.values()], timeout=remaining)
        answered = {}
        for task_id, (vhost, future) in futures.items():
            self._awaiting.pop((vhost, task_id), None)
            if future.done():
                answered[task_id] = future.result()
            else:
                future.cancel()
        return answered

    async def _receive(self, vhost: str, message: AbstractIncomingMessage) -> None:
        if len(message.body) > MAX_REPORT_BYTES:
            await self._refuse(vhost, message, f"reply of {len(message.body)} bytes")
            return
        try:
            report = WorkerReport.model_validate_json(message.body)
        except ValidationError as exc:
            await self._refuse(vhost, message, f"malformed reply: {str(exc)[:300]}")
            return
        reply = report.message
        if not isinstance(reply, m.WorkflowTaskCompleted | m.WorkflowTaskFailed):
            return
        future = self._awaiting.get((vhost, reply.task_id))
        if future is not None and not future.done():
            future.set_result(reply)
            return
        if len(self._late) >= MAX_LATE_IN_FLIGHT:
            return  # a flood: the task's timeout sends it again

        # Late: the batch that sent the task was written without it. The run's partition takes it.
        envelope = TaskEnvelope(
            namespace=self.namespace_of(vhost),
            workflow_id=report.workflow_id,
            run_id=reply.run_id,
            message=reply,
        )
        late = asyncio.create_task(self.tasks.send(envelope))
        self._late.add(late)
        late.add_done_callback(self._late.discard)

    async def _refuse(self, vhost: str, message: AbstractIncomingMessage, reason: str) -> None:
        """To the namespace's worker-report dead letters, with the reason (the task's timeout sends the
        task again: nothing waits on a refused reply)."""
        log.warning(
            "a reply to an inline workflow task was dead-lettered", extra={"vhost": vhost, "reason": reason}
        )
        try:
            await park(self.channels, vhost, WORKER_REPORTS_DEAD_LETTERS, message, reason)
        except Exception:
            log.warning("parking a refused reply failed; it is dropped", exc_info=True)

    async def close(self) -> None:
        for queue in self._queues.values():
            try:
                await queue.channel.close()
            except Exception:
                log.debug("closing a reply queue's channel failed", exc_info=True)
        self._queues.clear()
        await asyncio.gather(*self._late, return_exceptions=True)
