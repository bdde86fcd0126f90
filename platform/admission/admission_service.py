"""Admission: takes tenant requests from each namespace's ``ingress`` queue into the cell's partitions.

The vhost a request arrived on is its namespace (a namespace named in a body is ignored). Reads
(describe, list) are answered at once. Actions (start, signal, cancel, query, update) are validated,
then wait, unacknowledged, in a fair queue (token bucket per namespace, weighted deficit round robin across
namespaces); when admitted they are produced to Kafka, and only after Kafka acknowledged them is the
RabbitMQ message acknowledged and the client answered (invariant 1 of docs/architecture.md); starts,
queries and updates are answered by the engine, once the start is written, the query evaluated or the
update taken, finished or refused by the partition's owner.
A bounded prefetch per namespace is the backpressure: over-limit work stays in the tenant's own queue.
A malformed, oversized or unknown request gets an error reply and goes to the namespace's dead-letter
queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from opentelemetry import metrics, trace
from opentelemetry.context import Context, get_current
from pydantic import ValidationError

from perdure.infra.consumer_backlog import ConsumerBacklog
from perdure.infra.outages import OUTAGES, pause
from perdure.infra.periodic import every
from perdure.infra.telemetry import extract_amqp_context, inject_amqp_headers
from perdure.platform.admission.throttle_meter import ThrottleMeter
from perdure.platform.admission.visibility_answers import answer_count, answer_list
from perdure.platform.core import messages as m
from perdure.platform.core.definitions import UnknownWorkflowTypeError
from perdure.platform.core.payloads import Payload
from perdure.platform.core.start_rules import fresh_run_id
from perdure.platform.core.visibility_plan import MAX_UNSERVED_RUNS
from perdure.platform.messaging.amqp_channels import AmqpChannels, cancel_consumers
from perdure.platform.messaging.amqp_dead_letters import dead_letter
from perdure.platform.messaging.amqp_settle import ack, hand_back
from perdure.platform.messaging.task_producer import TaskProducer
from perdure.platform.protocol.cell_wire import TaskEnvelope
from perdure.platform.protocol.ingress_wire import (
    CANARY_WORKFLOW,
    BatchCommand,
    CancelRequest,
    ControlCommand,
    CountRequest,
    DescribeRequest,
    IngressReply,
    IngressRequest,
    ListRequest,
    QueryRequest,
    ResetRequest,
    ScheduleCommand,
    SignalRequest,
    StartRequest,
    UpdateRequest,
    request_adapter,
)
from perdure.platform.protocol.vhost_layout import INGRESS_DEAD_LETTERS, INGRESS_QUEUE
from perdure.platform.quotas.fair_queue import FairQueue
from perdure.platform.quotas.running_counts import RunningCounts
from perdure.platform.stores.control_store import NamespaceRecord
from perdure.platform.stores.namespace_apps import NamespaceApps, NamespaceUnavailable
from perdure.platform.stores.run_store import RunStore
from perdure.platform.stores.visibility import describe_run, list_entry

log = logging.getLogger("perdure.admission")
tracer = trace.get_tracer("perdure.admission")
meter = metrics.get_meter("perdure.admission")
admitted_counter = meter.create_counter("perdure.admission.admitted", description="actions admitted")
refused_counter = meter.create_counter("perdure.admission.refused", description="requests refused")
waiting_seconds = meter.create_histogram(
    "perdure.admission.wait_seconds", unit="s", description="time an action waited for its turn"
)
PREFETCH = 256  # per namespace: the bound on what waits in memory; the rest waits in RabbitMQ
# Without fairness (the comparison mode) admission models one shared FIFO: everything is taken in, in
# arrival order, as a single queue in front of the cell would hold it.
FIFO_PREFETCH = 20_000
BATCH = 500
# Records admission lets wait in the cell's partitions: few enough that a newly arrived namespace's
# work is near the front (measured: a 50-workflow tenant behind a 5,000 flood had p99 0.8 s with 50,
# 1.0 s with 100), enough to keep the engine's batches useful (the flood ran at 147 workflows/s with
# 50, 200/s with 100).
BACKLOG_LIMIT = 50
# Schedule and batch requests a namespace may have carried out at once (each is work on the control
# plane, some of it seconds long); more are refused until one is done.
CONTROL_COMMANDS_AT_ONCE = 4
# Carries out a namespace's schedule or batch request on the control plane
# (``control/tenant_commands.py``).
ControlCommands = Callable[[str, ControlCommand], Awaitable[IngressReply]]


@dataclass
class _Pending:
    message: AbstractIncomingMessage
    envelopes: list[TaskEnvelope]  # a start and its signal (signal-with-start) go in together
    run_id: str | None
    arrived: float
    reserved: bool = False  # a start holding a place of the namespace's concurrency quota
    # The trace it was received in (made inside its span): admitted in a batch, each keeps its own.
    trace_context: Context = field(default_factory=get_current)


class Admission:
    def __init__(
        self,
        apps: NamespaceApps,
        store: RunStore,
        tasks: TaskProducer,
        channels: AmqpChannels,
        *,
        backlog: ConsumerBacklog | None = None,
        fair: bool = True,
        refresh_seconds: float = 2.0,
        throttle_meter: ThrottleMeter | None = None,
        control_commands: ControlCommands | None = None,
        max_unserved_runs: int = MAX_UNSERVED_RUNS,
    ) -> None:
        self.apps = apps
        self.store = store
        self.tasks = tasks
        self.channels = channels
        self.queue: FairQueue[_Pending] = FairQueue(fair=fair)
        self.prefetch = PREFETCH if fair else FIFO_PREFETCH
        self.backlog = backlog
        self.refresh_seconds = refresh_seconds
        self.stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._consuming: dict[str, tuple[aio_pika.abc.AbstractQueue, str]] = {}
        self._records: dict[str, NamespaceRecord] = {}
        self._running = RunningCounts(store.count_running)
        self.throttle_meter = throttle_meter
        self.control_commands = control_commands
        # A namespace with more runs refuses a visibility query no index serves.
        self.max_unserved_runs = max_unserved_runs
        # The schedule and batch requests being carried out, each with the copies of it that came meanwhile (a
        # client sends a request again when its answer is slow): all are answered when it is done.
        self._control_copies: dict[tuple[str, str], list[AbstractIncomingMessage]] = {}
        self._control_tasks: set[asyncio.Task[None]] = set()

    # -- following the cell's namespaces -------------------------------------------------------------
    async def run(self) -> None:
        scheduler = asyncio.create_task(self._admit_loop(), name="admission")
        metering = (
            asyncio.create_task(self.throttle_meter.run(self.stopping), name="throttle-meter")
            if self.throttle_meter is not None
            else None
        )
        try:
            await every(
                self.refresh_seconds,
                self.stopping,
                self._refresh,
                log,
                "refreshing the namespaces to admit for",
            )
        finally:
            scheduler.cancel()
            await asyncio.gather(scheduler, return_exceptions=True)
            if metering is not None:
                if not self.stopping.is_set():
                    metering.cancel()
                await asyncio.gather(metering, return_exceptions=True)  # its last send, on a stop

    async def _refresh(self) -> None:
        records = await self.apps.serving()
        gone = {
            name: self._consuming.pop(name) for name in self._consuming.keys() - {r.name for r in records}
        }
        if gone:
            # Deleted, or being moved: what waits in its ingress is taken by the cell that serves it next.
            await cancel_consumers(gone.values(), "ingress")
            log.info("no longer admitting", extra={"namespaces": sorted(gone)})
        for record in records:
            self._records[record.name] = record
            quota = record.quota
            self.queue.configure(
                record.name, rate=quota.actions_per_second, burst=quota.burst, weight=quota.weight
            )
            if record.name not in self._consuming:
                await self._consume(record)

    async def _consume(self, record: NamespaceRecord) -> None:
        channel = await self.channels.connection_channel(record.vhost)
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.declare_queue(INGRESS_QUEUE, durable=True, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                await self._receive(record.name, message)
            except Exception as exc:
                # A dependency failed mid-request: the request goes back to its queue, taken again
                # later (its request id makes a second take harmless), instead of sitting unacknowledged.
                await pause(OUTAGES.failed("taking a request", exc, cap=2.0), self.stopping)
                if not message.processed:
                    await hand_back(message)

        self._consuming[record.name] = (queue, await queue.consume(on_message))
        log.info("admitting", extra={"namespace": record.name})

    async def stop(self) -> None:
        self.stopping.set()
        await cancel_consumers(self._consuming.values(), "ingress")
        # Unanswered, so unacknowledged: RabbitMQ gives them to the next admission of the namespace.
        for task in list(self._control_tasks):
            task.cancel()
        await asyncio.gather(*self._control_tasks, return_exceptions=True)

    # -- one request -----------------------------------------------------------------------------------
    async def _receive(self, namespace: str, message: AbstractIncomingMessage) -> None:
        record = self._records[namespace]
        with tracer.start_as_current_span(
            "perdure.admission.receive",
            context=extract_amqp_context(message.headers),
            attributes={"namespace": namespace},
        ):
            if len(message.body) > record.quota.max_payload_bytes + 64 * 1024:
                await self._refuse(
                    namespace,
                    message,
                    "payload_too_large",
                    f"request of {len(message.body)} bytes; the namespace allows "
                    f"{record.quota.max_payload_bytes} bytes of payload",
                    size=len(message.body),
                    limit=record.quota.max_payload_bytes,
                )
                return
            try:
                request = request_adapter.validate_json(message.body)
            except ValidationError as exc:
                await self._refuse(namespace, message, "malformed", _first_error(exc))
                return
            if record.status == "suspended" and not _reads(request):
                await self._refuse(
                    namespace,
                    message,
                    "namespace_suspended",
                    f"namespace {namespace!r} is suspended: it takes no new work until it is resumed",
                )
                return
            size = _payload_bytes(request)
            if size > record.quota.max_payload_bytes:
                await self._refuse(
                    namespace,
                    message,
                    "payload_too_large",
                    f"payloads of {size} bytes; the namespace allows {record.quota.max_payload_bytes}",
                    size=size,
                    limit=record.quota.max_payload_bytes,
                )
                return
            try:
                match request:
                    case DescribeRequest():
                        await self._answer_describe(namespace, message, request)
                    case ListRequest():
                        await self._answer_list(namespace, message, request)
                    case CountRequest():
                        await self._answer_count(namespace, message, request)
                    case StartRequest():
                        await self._accept_start(record, message, request)
                    case (
                        SignalRequest() | CancelRequest() | QueryRequest() | UpdateRequest() | ResetRequest()
                    ):
                        self._enqueue(namespace, message, [_steering(namespace, request, message)], None)
                    case ScheduleCommand() | BatchCommand():
                        await self._accept_control_command(namespace, message, request)
            except NamespaceUnavailable as exc:
                log.error("namespace unavailable", extra={"namespace": namespace, "error": str(exc)})
                await hand_back(message)
                await asyncio.sleep(1)

    async def _accept_start(
        self, record: NamespaceRecord, message: AbstractIncomingMessage, request: StartRequest
    ) -> None:
        namespace = record.name
        known = record.workflow_types
        if known and request.workflow_type not in known and request.workflow_type != CANARY_WORKFLOW:
            reason = str(UnknownWorkflowTypeError(request.workflow_type, known))
            await self._refuse(namespace, message, "unknown_workflow_type", reason, known=sorted(known))
            return
        run_id = fresh_run_id(namespace, request.workflow_id, request.request_id)
        # A plain start is checked against the existing runs by the engine, which answers it; a
        # signal-with-start must know here whether it is a signal or a start.
        latest = await self.store.latest_run(namespace, request.workflow_id) if request.signal else None
        if (
            request.signal is not None
            and latest is not None
            and latest["_id"] != run_id
            and latest["status"] in ("running", "blocked")
        ):
            # Signal-with-start on a running workflow: only the signal goes in.
            signal = SignalRequest(
                request_id=request.request_id, workflow_id=request.workflow_id, signal=request.signal
            )
            self._enqueue(namespace, message, [_steering(namespace, signal, message)], latest["_id"])
            return
        running = await self._running.reserve(namespace, record.quota.max_concurrent_workflows)
        if running is not None:
            await self._refuse(
                namespace,
                message,
                "quota_exceeded",
                f"{running} workflows are running; the namespace allows "
                f"{record.quota.max_concurrent_workflows} at once",
            )
            return
        start = m.StartWorkflow(
            request_id=request.request_id,
            workflow_type=request.workflow_type,
            workflow_id=request.workflow_id,
            input=request.input,
            execution_timeout=request.execution_timeout,
            signal_name=request.signal.name if request.signal else None,
            signal_input=request.signal.input if request.signal else [],
        )
        envelope = TaskEnvelope(
            namespace=namespace,
            workflow_id=request.workflow_id,
            message=start,
            id_reuse_policy=request.id_reuse_policy,
            # The engine answers once the run is written, or refuses a start that lost a race.
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
        )
        self._enqueue(namespace, message, [envelope], run_id, reserved=True)

    async def _accept_control_command(
        self, namespace: str, message: AbstractIncomingMessage, command: ControlCommand
    ) -> None:
        if self.control_commands is None:
            await self._refuse(
                namespace, message, "unavailable", f"this cell carries out no {command.kind} requests"
            )
            return
        key = (namespace, command.request_id)
        copies = self._control_copies.get(key)
        if copies is not None:  # the same request sent again while it is carried out
            copies.append(message)
            return
        at_once = sum(1 for name, _ in self._control_copies if name == namespace)
        if at_once >= CONTROL_COMMANDS_AT_ONCE:
            await self._refuse(
                namespace,
                message,
                "quota_exceeded",
                f"{at_once} schedule and batch requests of the namespace are being carried out; it may "
                f"have {CONTROL_COMMANDS_AT_ONCE} at once",
            )
            return
        self._control_copies[key] = [message]
        task = asyncio.create_task(self._carry_out_control_command(namespace, key, command))
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    async def _carry_out_control_command(
        self, namespace: str, key: tuple[str, str], command: ControlCommand
    ) -> None:
        assert self.control_commands is not None
        with tracer.start_as_current_span(
            f"perdure.admission.{command.kind}_command",
            attributes={"namespace": namespace, "action": command.action},
        ):
            try:
                reply = await self.control_commands(namespace, command)
            except Exception as exc:
                # The control plane failed mid-request: taken again later (its request id makes that
                # harmless), after a pause that grows while the failure lasts.
                await pause(
                    OUTAGES.failed(f"carrying out a {command.kind} request", exc, cap=2.0), self.stopping
                )
                for copy in self._control_copies.pop(key, []):
                    if not copy.processed:
                        await hand_back(copy)
                return
            if not reply.ok:
                refused_counter.add(
                    1, {"namespace": namespace, "error": reply.error.type if reply.error else ""}
                )
            for copy in self._control_copies.pop(key, []):
                await ack(copy)
                await self._reply(namespace, copy, reply)

    def _enqueue(
        self,
        namespace: str,
        message: AbstractIncomingMessage,
        envelopes: list[TaskEnvelope],
        run_id: str | None,
        *,
        reserved: bool = False,
    ) -> None:
        now = time.monotonic()
        if self.throttle_meter is not None and self.queue.throttled(namespace, now):
            self.throttle_meter.note(namespace, _request_id(message, envelopes[0]))
        self.queue.put(namespace, _Pending(message, envelopes, run_id, now, reserved))
        self._wakeup.set()

    # -- admitting ---------------------------------------------------------------------------------------
    async def _admit_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._admit_due()
            except Exception as exc:  # its requests stay queued in RabbitMQ
                await pause(OUTAGES.failed("admitting a batch", exc, cap=2.0), self.stopping)

    async def _admit_due(self) -> None:
        room = BATCH
        if self.backlog is not None:
            room = min(BATCH, BACKLOG_LIMIT - self.backlog.estimate())
            if room <= 0 and self.queue.waiting():
                # The estimate only errs high: full by it, the backlog is measured before admission waits.
                room = min(BATCH, BACKLOG_LIMIT - await self.backlog.records())
                if room <= 0:
                    await asyncio.sleep(self.backlog.every_seconds)  # the engine is behind: let it catch up
                    return
        now = time.monotonic()
        taken = self.queue.take(now, max(room, 0))
        if not taken:
            delay = self.queue.next_ready_in(now)
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), 1.0 if delay is None else max(delay, 0.001))
            except TimeoutError:
                pass
            return
        envelopes = [envelope for _, pending in taken for envelope in pending.envelopes]
        traces = [pending.trace_context for _, pending in taken for _ in pending.envelopes]
        try:
            await self.tasks.send_all(envelopes, traces)
        except Exception:
            for namespace, pending in taken:  # not admitted: back to RabbitMQ, to be delivered again
                if pending.reserved:
                    self._running.released(namespace)
                await hand_back(pending.message)
            raise
        for namespace, pending in taken:
            if pending.reserved:
                self._running.sent(namespace)
            await ack(pending.message)
            admitted_counter.add(1, {"namespace": namespace})
            if self.backlog is not None:
                self.backlog.admitted(len(pending.envelopes))
            waiting_seconds.record(now - pending.arrived, {"namespace": namespace})
            if pending.envelopes[0].reply_to is None:  # starts and queries are answered by the engine
                await self._reply(namespace, pending.message, IngressReply(ok=True, run_id=pending.run_id))

    # -- answers -----------------------------------------------------------------------------------------
    async def _answer_describe(
        self, namespace: str, message: AbstractIncomingMessage, request: DescribeRequest
    ) -> None:
        if request.run_id:
            document = await self.store.run(request.run_id)
            # A run id of another namespace or workflow (a hostile or mistaken client) is no run here.
            if document is not None and (document["namespace"], document["workflow_id"]) != (
                namespace,
                request.workflow_id,
            ):
                document = None
        else:
            document = await self.store.latest_run(namespace, request.workflow_id)
        if document is None:
            which = f"run {request.run_id} of workflow" if request.run_id else "workflow"
            reply = IngressReply.failed("not_found", f"no {which} {request.workflow_id!r}")
        else:
            reply = IngressReply(ok=True, run_id=document["_id"], description=describe_run(document))
        await ack(message)
        await self._reply(namespace, message, reply)

    async def _answer_list(
        self, namespace: str, message: AbstractIncomingMessage, request: ListRequest
    ) -> None:
        if request.query is not None or request.page_token is not None:
            reply = await answer_list(
                self.apps.control, self.store, namespace, request, max_unserved_runs=self.max_unserved_runs
            )
            await ack(message)
            await self._reply(namespace, message, reply)
            return
        runs = await self.store.list_runs(
            namespace, status=request.status, workflow_type=request.workflow_type, limit=request.limit
        )
        await ack(message)
        await self._reply(namespace, message, IngressReply(ok=True, runs=[list_entry(d) for d in runs]))

    async def _answer_count(
        self, namespace: str, message: AbstractIncomingMessage, request: CountRequest
    ) -> None:
        reply = await answer_count(
            self.apps.control, self.store, namespace, request, max_unserved_runs=self.max_unserved_runs
        )
        await ack(message)
        await self._reply(namespace, message, reply)

    async def _refuse(
        self, namespace: str, message: AbstractIncomingMessage, error: Any, reason: str, **details: Any
    ) -> None:
        refused_counter.add(1, {"namespace": namespace, "error": error})
        log.warning("request refused", extra={"namespace": namespace, "error": error, "reason": reason})
        await self._reply(namespace, message, IngressReply.failed(error, reason, **details))
        vhost = self._records[namespace].vhost
        await dead_letter(self.channels, vhost, INGRESS_DEAD_LETTERS, message, f"{error}: {reason}")

    async def _reply(self, namespace: str, message: AbstractIncomingMessage, reply: IngressReply) -> None:
        if not message.reply_to:
            return
        channel: AbstractChannel = await self.channels.channel(self._records[namespace].vhost)
        await channel.default_exchange.publish(
            aio_pika.Message(
                reply.model_dump_json().encode(),
                content_type="application/json",
                correlation_id=message.correlation_id,
                headers=inject_amqp_headers({}),
            ),
            routing_key=message.reply_to,
        )


def _reads(request: IngressRequest) -> bool:
    """Whether ``request`` only reads (what a suspended namespace still answers)."""
    if isinstance(request, ScheduleCommand | BatchCommand):
        return request.action in ("describe", "list")
    return isinstance(request, DescribeRequest | ListRequest | CountRequest)


def _steering(
    namespace: str,
    request: SignalRequest | CancelRequest | QueryRequest | UpdateRequest | ResetRequest,
    incoming: AbstractIncomingMessage,
) -> TaskEnvelope:
    message: m.RunMessage
    if isinstance(request, ResetRequest):
        # Answered by the partition's owner once the new run is written (or the reset refused).
        return TaskEnvelope(
            namespace=namespace,
            workflow_id=request.workflow_id,
            run_id=request.run_id,
            message=m.ResetWorkflow(
                request_id=request.request_id,
                to=request.to,
                reason=request.reason,
                reapply_signals=request.reapply_signals,
            ),
            reply_to=incoming.reply_to,
            correlation_id=incoming.correlation_id,
        )
    if isinstance(request, UpdateRequest):
        return TaskEnvelope(
            namespace=namespace,
            workflow_id=request.workflow_id,
            run_id=request.run_id,
            message=m.UpdateWorkflow(
                update_id=request.request_id,
                update_name=request.update_name,
                input=request.input,
                wait_for=request.wait_for,
            ),
            reply_to=incoming.reply_to,
            correlation_id=incoming.correlation_id,
        )
    if isinstance(request, QueryRequest):
        return TaskEnvelope(
            namespace=namespace,
            workflow_id=request.workflow_id,
            run_id=request.run_id,
            message=m.QueryWorkflow(
                request_id=request.request_id, query_name=request.query_name, input=request.input
            ),
            reply_to=incoming.reply_to,
            correlation_id=incoming.correlation_id,
        )
    if isinstance(request, SignalRequest):
        message = m.SignalWorkflow(
            request_id=request.request_id, signal_name=request.signal.name, input=request.signal.input
        )
    elif request.terminate:
        message = m.TerminateWorkflowRequest(request_id=request.request_id, reason=request.reason)
    else:
        message = m.CancelWorkflowRequest(request_id=request.request_id, reason=request.reason)
    return TaskEnvelope(
        namespace=namespace, workflow_id=request.workflow_id, run_id=request.run_id, message=message
    )


def _request_id(message: AbstractIncomingMessage, envelope: TaskEnvelope) -> str:
    """The id a request is metered under: its own (the same on every redelivery)."""
    request = envelope.message
    return str(
        getattr(request, "request_id", None)
        or getattr(request, "update_id", None)
        or message.correlation_id
        or message.delivery_tag
    )


def _payload_bytes(request: IngressRequest) -> int:
    """The tenant data a request carries (inputs of the start, signal, query or update), as its quota
    counts."""
    payloads: list[Payload] = []
    match request:
        case StartRequest():
            payloads = [*request.input, *(request.signal.input if request.signal else [])]
        case SignalRequest():
            payloads = request.signal.input
        case QueryRequest() | UpdateRequest():
            payloads = request.input
    return sum(len(p.data) for p in payloads)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ())) or "body"
    # Both may quote the request (a union's unknown tag): bounded, as the reply and the log take them.
    return f"malformed request: {where[:200]}: {error.get('msg', 'invalid')[:300]}"
