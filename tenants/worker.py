"""A namespace's worker: runs its workflow code and activities, reaching the platform only through the
namespace's RabbitMQ vhost with the namespace's key (docs/architecture.md, "Workers").

Tenant-hosted (``perdure worker run --app MOD:ATTR --connect CONN``, or ``Worker(conn, app).run()`` in
the tenant's own process) and platform-hosted (the same code, started in a sandbox by the cell's
worker supervisor) workers speak the same protocol (``perdure.platform.protocol.worker_wire``):

- workflow tasks from the shared ``workflow-tasks`` queue and from the worker's own sticky queue (a
  server-named exclusive queue: it dies with the connection). Instances are cached, so a sticky task
  carries only the events the instance has not seen; queries ride on tasks and are answered on the
  asking client's reply queue.
- activity tasks from ``activities``: at most ``max_concurrent_activities`` at once. A task is
  acknowledged once taken; a worker that dies afterwards is noticed by the activity's timeouts.
- everything the engine must hear goes to ``worker-reports``, with publisher confirms (an activity's
  outcome is sent again, through broker outages, until it is confirmed); answers to an
  engine that waits for them (inline tasks) go to its reply queue, and provisional copies of results
  (see ``Worker._continue``) go unconfirmed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.exceptions import ProbableAuthenticationError
from opentelemetry import metrics, trace
from pydantic import ValidationError

from perdure.infra.amqp_reconnect import connect_with_backoff
from perdure.infra.outages import OUTAGES
from perdure.infra.telemetry import extract_amqp_context, inject_amqp_headers
from perdure.platform.core import messages as m
from perdure.platform.core.activity_invocation import invoke_activity
from perdure.platform.core.definitions import WorkflowRegistry
from perdure.platform.core.failures import ApplicationError, failure_from_exception
from perdure.platform.core.outbox import DispatchActivity
from perdure.platform.core.payloads import DataConverter, Payload, default_converter
from perdure.platform.core.workflow_activations import QueryAnswer, WorkflowActivations
from perdure.platform.protocol.ingress_wire import IngressReply
from perdure.platform.protocol.vhost_layout import (
    ACTIVITIES_QUEUE,
    STICKY_QUEUE_PREFIX,
    WORKER_REPORTS_QUEUE,
    WORKFLOW_TASKS_QUEUE,
)
from perdure.platform.protocol.worker_wire import (
    PROVISIONAL_HEADER,
    WorkerReport,
    WorkflowActivation,
    result_key,
)
from perdure.platform.quotas.token_bucket import TokenBucket
from perdure.tenants.client_errors import AuthenticationError

log = logging.getLogger("perdure.worker")
tracer = trace.get_tracer("perdure.worker")
meter = metrics.get_meter("perdure.worker")
executions = meter.create_counter("perdure.activities.executed", description="activity attempts run")
workflow_tasks = meter.create_counter("perdure.worker.workflow_tasks", description="workflow tasks run")
duplicates = meter.create_counter(
    "perdure.activities.duplicates", description="copies of an activity attempt this worker had taken"
)
TAKEN_REMEMBERED = 10_000
WORKFLOW_TASK_PREFETCH = 32
# How long workflow code may run past an activity's result before the result goes out on its own.
PROVISIONAL_AFTER_SECONDS = 0.005
# An outcome that could not be reported is tried again at least this often once the broker answers.
REPORT_RETRY_CAP_SECONDS = 1.0
REPLACE_CHANNEL_AFTER_ATTEMPTS = 5


class Worker:
    def __init__(
        self,
        connection_string: str,
        app: WorkflowRegistry,
        *,
        converter: DataConverter = default_converter,
        max_concurrent_activities: int = 100,
        activities_per_second: float | None = None,
        activity_burst: int = 1,
        max_cached_workflows: int = 1000,
        identity: str | None = None,
    ) -> None:
        self.connection_string = connection_string
        self.app = app
        self.converter = converter
        self.max_concurrent_activities = max_concurrent_activities
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}"
        self.activations = WorkflowActivations(
            app, converter, capacity=max_cached_workflows, identity=self.identity
        )
        self._connection: AbstractRobustConnection | None = None
        self._reports: AbstractRobustChannel | None = None
        self._replies: AbstractChannel | None = None
        self._replacing = asyncio.Lock()
        self._slots = asyncio.Semaphore(max_concurrent_activities)
        # Activity starts per second (Temporal's ``max_activities_per_second``); a platform-hosted
        # worker is given its namespace's rate and burst.
        self._rate = TokenBucket(activities_per_second, activity_burst) if activities_per_second else None
        self._running: dict[asyncio.Task[None], DispatchActivity] = {}
        # The attempts taken lately (by their result key), so a copy of one is not run again here.
        self._taken: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        # Continuations run workflow code off the event loop, one at a time; a run's workflow tasks wait
        # for its continuation in progress.
        self._continuation_thread = ThreadPoolExecutor(1, thread_name_prefix="perdure-continuation")
        self._continuing: dict[str, asyncio.Future[None]] = {}
        self.started = asyncio.Event()
        self._stopping = False
        self.handed_back = 0  # activities still running at the end of the stop's grace
        self.last_task_at = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the worker last took or finished a task (0 while activities run)."""
        return 0.0 if self._running else time.monotonic() - self.last_task_at

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or the task is cancelled), then finish the work in hand."""
        await self.start()
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await self.shutdown()

    async def start(self) -> None:
        try:
            self._connection = await connect_with_backoff(self.connection_string)
        except ProbableAuthenticationError as exc:
            raise AuthenticationError(f"the namespace's key was refused: {exc}") from None
        self._reports = await self._connection.channel(publisher_confirms=True)
        # Answers to an engine that waits (inline tasks) and to queries go to transient reply queues:
        # a lost one is a timeout there, so they are not confirmed.
        self._replies = await self._connection.channel(publisher_confirms=False)
        workflows = await self._connection.channel()
        await workflows.set_qos(prefetch_count=WORKFLOW_TASK_PREFETCH)
        sticky = await workflows.declare_queue(
            f"{STICKY_QUEUE_PREFIX}{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        self.activations.sticky_queue = sticky.name
        shared = await workflows.declare_queue(WORKFLOW_TASKS_QUEUE, durable=True, passive=True)
        activities = await self._connection.channel()
        await activities.set_qos(prefetch_count=self.max_concurrent_activities)
        activity_queue = await activities.declare_queue(ACTIVITIES_QUEUE, durable=True, passive=True)
        for queue, callback in (
            (sticky, self._on_workflow_task),
            (shared, self._on_workflow_task),
            (activity_queue, self._on_activity_task),
        ):
            self._consumers.append((queue, await queue.consume(callback)))
        self.started.set()
        log.info("worker serving", extra={"identity": self.identity, "sticky_queue": sticky.name})

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop taking tasks and let the activities in hand finish (workflow tasks are short); tasks
        delivered but not begun go back to the queue for another worker. Activities still running after
        ``grace`` seconds are handed back: each is reported failed (retryable, ``WorkerStopped``), so
        the engine retries it at once rather than after its timeout; their threads, which cannot be
        stopped, end with the process."""
        self._stopping = True
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        self._consumers.clear()
        log.info("worker no longer taking tasks", extra={"identity": self.identity})
        if self._running:
            _, unfinished = await asyncio.wait(list(self._running), timeout=grace)
            if unfinished:
                await self._hand_back({task: self._running[task] for task in unfinished})
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        self._continuation_thread.shutdown(wait=False)

    async def _hand_back(self, unfinished: dict[asyncio.Task[None], DispatchActivity]) -> None:
        log.warning(
            "activities still running at the end of the stop's grace: handed back",
            extra={
                "activities": [f"{t.workflow_id}/{t.activity_type}#{t.attempt}" for t in unfinished.values()]
            },
        )
        stopped = ApplicationError("the worker stopped before the activity finished", type="WorkerStopped")
        for running, task in unfinished.items():
            if running.done():  # it finished meanwhile: its outcome went out
                continue
            running.cancel()
            self.handed_back += 1
            failed = m.ActivityFailed(
                run_id=task.run_id,
                scheduled_event_id=task.scheduled_event_id,
                attempt=task.attempt,
                failure=failure_from_exception(stopped, self.converter),
            )
            with contextlib.suppress(Exception):  # the timeout retries it should this not reach the engine
                await self._report(task.workflow_id, failed)

    # -- workflow tasks ---------------------------------------------------------------------------------
    async def _on_workflow_task(self, message: AbstractIncomingMessage) -> None:
        self.last_task_at = time.monotonic()
        if self._stopping:
            await message.nack(requeue=True)
            return
        try:
            activation = WorkflowActivation.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning("malformed workflow task dead-lettered", extra={"error": str(exc)[:500]})
            await message.reject(requeue=False)
            return
        task = activation.task
        busy = self._continuing.get(task.run_id)
        if busy is not None:
            await busy
        with tracer.start_as_current_span(
            "perdure.worker.workflow_task",
            context=extract_amqp_context(message.headers),
            attributes={"namespace": task.namespace, "workflow_type": task.workflow_type},
        ):
            try:
                outcome = self.activations.activate(task, activation.events)
            except ValueError as exc:
                log.warning("workflow task refused", extra={"error": str(exc)})
                await message.reject(requeue=False)
                return
            for answer in outcome.answers:
                await self._answer(answer)
            if outcome.reply is not None:
                # Straight to the engine that waits for it, if it said where; else through the reports.
                await self._report(task.workflow_id, outcome.reply, to=message.reply_to)
            await message.ack()
            workflow_tasks.add(1, {"outcome": outcome.reply.kind if outcome.reply else "query"})

    async def _answer(self, answer: QueryAnswer) -> None:
        query = answer.query
        if not query.reply_to:
            return
        if answer.error is not None:
            reply = IngressReply.failed("query_failed", answer.error, failure_type=answer.failure_type)
        else:
            reply = IngressReply(ok=True, result=answer.result)
        assert self._replies is not None
        await self._replies.default_exchange.publish(
            aio_pika.Message(
                reply.model_dump_json().encode(),
                content_type="application/json",
                correlation_id=query.correlation_id,
                headers=inject_amqp_headers({}),
            ),
            routing_key=query.reply_to,
        )

    async def _report(
        self, workflow_id: str, message: Any, to: str | None = None, *, provisional: bool = False
    ) -> None:
        channel = self._replies if to or provisional else self._reports
        assert channel is not None
        await channel.default_exchange.publish(
            self._report_message(workflow_id, message, provisional=provisional),
            routing_key=to or WORKER_REPORTS_QUEUE,
        )

    async def _report_until_confirmed(self, workflow_id: str, message: Any) -> None:
        """Report an activity's outcome, again and again until the broker confirms it: an outcome lost
        to a broker outage would cost another execution of the activity (after its timeout), and the
        attempt's slot stays taken meanwhile, so a worker that cannot report stops taking activities.
        A report sent twice (its confirm lost) is recognised by the engine as a duplicate."""
        attempt = 0
        while True:
            channel = self._reports
            assert channel is not None
            try:
                await channel.default_exchange.publish(
                    self._report_message(workflow_id, message), routing_key=WORKER_REPORTS_QUEUE
                )
            except Exception as exc:
                if self._connection is None or self._connection.is_closed:
                    raise  # closed on purpose: the activity's timeout retries it
                attempt += 1
                await asyncio.sleep(
                    min(OUTAGES.failed("reporting an outcome", exc), REPORT_RETRY_CAP_SECONDS)
                )
                await self._reports_channel_ready(attempt)
                continue
            if attempt:
                OUTAGES.succeeded("reporting an outcome", ("rabbitmq",))
            return

    async def _reports_channel_ready(self, attempt: int) -> None:
        """Wait for the connection and the reports channel to be back (aio-pika restores the channels
        after a reconnect one by one, so activities may be delivered again before reports can go out).
        A channel that stays closed on a live connection is replaced."""
        assert self._connection is not None and self._reports is not None
        await self._connection.ready()
        if attempt >= REPLACE_CHANNEL_AFTER_ATTEMPTS and self._reports.is_closed:
            async with self._replacing:  # by one of the outcomes waiting, not by each
                if self._reports.is_closed:
                    stale = self._reports
                    self._reports = await self._connection.channel(publisher_confirms=True)
                    log.warning("the reports channel stayed closed; replaced")
                    with contextlib.suppress(Exception):
                        await stale.close()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REPORT_RETRY_CAP_SECONDS):
                await self._reports.ready()

    def _report_message(
        self, workflow_id: str, message: Any, *, provisional: bool = False
    ) -> aio_pika.Message:
        report = WorkerReport(workflow_id=workflow_id, message=message)
        headers: dict[str, Any] = {"perdure-version": "1"}
        correlation_id = None
        if provisional:
            # Transient and unconfirmed: the result itself follows, persistent and confirmed.
            headers[PROVISIONAL_HEADER] = "1"
            correlation_id = result_key(message.run_id, message.scheduled_event_id, message.attempt)
        return aio_pika.Message(
            report.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=(
                aio_pika.DeliveryMode.NOT_PERSISTENT if provisional else aio_pika.DeliveryMode.PERSISTENT
            ),
            type=message.kind,
            correlation_id=correlation_id,
            headers=inject_amqp_headers(headers),
        )

    # -- activity tasks ---------------------------------------------------------------------------------
    async def _on_activity_task(self, message: AbstractIncomingMessage) -> None:
        self.last_task_at = time.monotonic()
        try:
            task = DispatchActivity.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning("malformed activity task dead-lettered", extra={"error": str(exc)[:500]})
            await message.reject(requeue=False)
            return
        key = result_key(task.run_id, task.scheduled_event_id, task.attempt)
        if key in self._taken:
            # The same attempt again (the broker's redelivery after an outage, or the engine sending a
            # batch's outbox again): this worker runs it, or ran it and reported its outcome already.
            duplicates.add(1, {"namespace": task.namespace})
            await message.ack()
            return
        self._taken[key] = None
        while len(self._taken) > TAKEN_REMEMBERED:
            self._taken.popitem(last=False)
        await self._slots.acquire()
        if self._rate is not None:
            await asyncio.sleep(self._rate.reserve(time.monotonic()))  # tokens come with time
        if self._stopping:
            self._slots.release()
            self._taken.pop(key, None)  # another worker runs it
            await message.nack(requeue=True)
            return
        running = asyncio.create_task(self._execute(message, task))
        self._running[running] = task

        def finished(done: asyncio.Task[None]) -> None:
            self._running.pop(done, None)
            self.last_task_at = time.monotonic()
            self._slots.release()
            if not done.cancelled() and done.exception() is not None:
                log.error("running an activity task failed", exc_info=done.exception())

        running.add_done_callback(finished)

    async def _execute(self, message: AbstractIncomingMessage, task: DispatchActivity) -> None:
        with tracer.start_as_current_span(
            "perdure.activity",
            context=extract_amqp_context(message.headers),
            attributes={"namespace": task.namespace, "activity": task.activity_type, "attempt": task.attempt},
        ):
            await self._execute_traced(message, task)

    async def _execute_traced(self, message: AbstractIncomingMessage, task: DispatchActivity) -> None:
        try:
            if task.options.schedule_to_start_timeout is not None:
                # Only then must the engine hear of the start before the outcome.
                await self._report(
                    task.workflow_id,
                    m.ActivityStarted(
                        run_id=task.run_id,
                        scheduled_event_id=task.scheduled_event_id,
                        attempt=task.attempt,
                        identity=self.identity,
                    ),
                )
        except Exception:
            self._taken.pop(result_key(task.run_id, task.scheduled_event_id, task.attempt), None)
            await message.nack(requeue=True)  # not taken after all: it is delivered again
            raise
        await message.ack()
        heartbeats = _HeartbeatSender(self, task)
        outcome = await invoke_activity(task, self.app, self.converter, heartbeats.beat)
        await heartbeats.drain()
        if (
            isinstance(outcome, m.ActivityCompleted)
            and heartbeats.sent == 0
            and task.options.schedule_to_start_timeout is None
        ):
            continuation = await self._continue(task, outcome)
            if continuation is not None:
                outcome = outcome.model_copy(update={"continuation": continuation})
                workflow_tasks.add(1, {"outcome": "continuation"})
        await self._report_until_confirmed(task.workflow_id, outcome)
        executions.add(1, {"namespace": task.namespace, "outcome": outcome.kind})

    async def _continue(
        self, task: DispatchActivity, completed: m.ActivityCompleted
    ) -> m.Continuation | None:
        """Go on with the run's code past this result (``WorkflowActivations.continue_after``). The code
        runs on the continuation thread; should it take longer than ``PROVISIONAL_AFTER_SECONDS``, the
        result goes out first, as a provisional copy, so a worker that dies meanwhile loses no completed
        activity. The run's workflow tasks wait for it meanwhile."""
        prepared = self.activations.prepare_continuation(task, completed, datetime.now(UTC))
        if prepared is None:
            return None
        busy = asyncio.get_running_loop().create_future()
        self._continuing[task.run_id] = busy
        try:
            advancing = asyncio.get_running_loop().run_in_executor(
                self._continuation_thread, prepared.advance
            )
            try:
                advanced = await asyncio.wait_for(asyncio.shield(advancing), PROVISIONAL_AFTER_SECONDS)
            except TimeoutError:
                await self._report(task.workflow_id, completed, provisional=True)
                advanced = await advancing
            return self.activations.finish_continuation(prepared, advanced)
        finally:
            del self._continuing[task.run_id]
            busy.set_result(None)


class _HeartbeatSender:
    """Coalesces heartbeats: at most one in flight, the newest details win."""

    def __init__(self, worker: Worker, task: DispatchActivity) -> None:
        self.worker = worker
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
            await self.worker._report(
                self.task.workflow_id,
                m.ActivityHeartbeat(
                    run_id=self.task.run_id,
                    scheduled_event_id=self.task.scheduled_event_id,
                    attempt=self.task.attempt,
                    details=details,
                    sequence=self.sent,
                ),
            )

    async def drain(self) -> None:
        await asyncio.sleep(0)  # let heartbeats scheduled from a worker thread reach the loop
        if self.sending is not None:
            await self.sending
