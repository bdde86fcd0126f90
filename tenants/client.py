"""The tenant client: a tenant app's connection to its namespace.

``await Client.connect(connection_string)`` opens the namespace's vhost with its API key. Requests go
to the namespace's ``ingress`` queue (publisher-confirmed), and admission answers on this client's own
reply queue; completions arrive on the same queue from the namespace's ``results`` exchange. ``Client``
and ``LocalEnvironment`` both implement ``WorkflowClient``, so tenant code and tests switch between them
by one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import typing
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ProbableAuthenticationError
from pydantic import ValidationError

from perdure.infra.amqp_reconnect import connect_with_backoff
from perdure.infra.close_at_loop_end import CloseAtLoopEnd
from perdure.infra.telemetry import inject_amqp_headers
from perdure.platform.core.definitions import (
    QUERY_MARK,
    SIGNAL_MARK,
    UnknownWorkflowTypeError,
    handler_name_of,
    update_name_of,
    workflow_name_of,
)
from perdure.platform.core.failures import ApplicationError, Failure
from perdure.platform.core.outbox import RunClosed, UpdateOutcome, close_routing_key
from perdure.platform.core.payloads import DataConverter, Payload, PayloadTooLargeError, default_converter
from perdure.platform.core.reset import ResetRefused, reset_target
from perdure.platform.core.schedule_policy import (
    DEFAULT_CATCHUP_WINDOW,
    DEFAULT_OVERLAP_POLICY,
    OverlapPolicy,
)
from perdure.platform.core.schedule_spec import ScheduleSpec
from perdure.platform.core.start_rules import IdReusePolicy
from perdure.platform.protocol.batch_wire import DEFAULT_RATE, BatchOperation
from perdure.platform.protocol.ingress_wire import (
    BatchCommand,
    CancelRequest,
    CountRequest,
    DescribeRequest,
    IngressReply,
    ListRequest,
    QueryRequest,
    ResetRequest,
    ScheduleCommand,
    SignalRequest,
    SignalSpec,
    StartRequest,
    UpdateRequest,
)
from perdure.platform.protocol.vhost_layout import CLIENT_QUEUE_PREFIX, INGRESS_QUEUE, RESULTS_EXCHANGE
from perdure.tenants import batch_handle, schedule_handle
from perdure.tenants.batch_handle import BatchHandle
from perdure.tenants.client_errors import (
    AuthenticationError,
    BatchAlreadyRunningError,
    BatchNotFoundError,
    MalformedRequestError,
    NamespaceSuspendedError,
    QuotaExceededError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    ServiceUnavailableError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
    WorkflowResetError,
)
from perdure.tenants.control_sender import CONTROL_REQUEST_TIMEOUT
from perdure.tenants.run_outcome import run_outcome
from perdure.tenants.schedule_handle import ScheduleHandle
from perdure.tenants.update_outcome import update_outcome
from perdure.tenants.workflow_client import (
    QueryType,
    ReturnType,
    UpdateRef,
    UpdateType,
    WorkflowClient,
    WorkflowDescription,
    WorkflowRef,
)

REQUEST_TIMEOUT = 30.0
# A request not answered within this is sent again (same request id: admission and the engine take it
# once), and the wait for the next answer doubles up to ATTEMPT_MAX_SECONDS: the request waits in its
# durable queue, and an answer to any of its copies is taken, so a silence is most likely a busy
# namespace, which copies sent at a steady pace would bury (each one is work for admission). A lost
# connection sends it again as soon as the client is connected again (its reply queue went with it).
ATTEMPT_SECONDS = 10.0
ATTEMPT_MAX_SECONDS = 60.0
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 2.0
OPEN_STATUSES = ("running", "blocked")
# How many workflow ids' last close a client keeps for a later ``result()``.
CLOSES_REMEMBERED = 10_000
# How many times an update is sent on to the next run of a chain that continued as new before taking it.
CONTINUED_RUNS_FOLLOWED = 10
_Request = (
    StartRequest
    | SignalRequest
    | CancelRequest
    | QueryRequest
    | UpdateRequest
    | DescribeRequest
    | ListRequest
    | CountRequest
    | ScheduleCommand
    | BatchCommand
    | ResetRequest
)


class Client(WorkflowClient):
    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        replies: AbstractQueue,
        converter: DataConverter,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._replies = replies
        self.converter = converter
        self.request_timeout = request_timeout
        self._pending: dict[str, asyncio.Future[IngressReply]] = {}
        self._closed_runs: dict[str, list[asyncio.Future[RunClosed]]] = {}
        self._bound: set[str] = set()
        # The last close heard of each workflow id, for a ``result()`` called after it was announced (a
        # caller polling with short timeouts is not waiting at the moment the close goes by).
        self._heard_closes: OrderedDict[str, RunClosed] = OrderedDict()
        # Set (and replaced) each time the connection comes back: what was sent or awaited across the
        # outage is sent again or looked up again.
        self._reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._loop_end = CloseAtLoopEnd(self._connection.close)  # for a script that never closes it

    @classmethod
    async def connect(
        cls,
        connection_string: str,
        *,
        converter: DataConverter | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> Client:
        """Connect to the namespace. The client rides out broker restarts and network loss: it connects
        again by itself (its reply queue and what it listens for come back with it), sends unanswered
        requests again with the same request id, and looks again at the runs it waits for. A request
        still unanswered after ``request_timeout`` raises ``ServiceUnavailableError``."""
        try:
            connection = await connect_with_backoff(connection_string)
        except ProbableAuthenticationError as exc:
            raise AuthenticationError(f"the namespace's key was refused: {exc}") from None
        channel = await connection.channel(publisher_confirms=True)
        # Named by the client, so it is the same queue again after a reconnect.
        replies = await channel.declare_queue(
            f"{CLIENT_QUEUE_PREFIX}{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        client = cls(connection, channel, replies, converter or default_converter, request_timeout)
        await replies.consume(client._on_reply, no_ack=True)
        return client

    def _on_reconnect(self, *_: object) -> None:
        reconnected, self._reconnected = self._reconnected, asyncio.Event()
        reconnected.set()

    async def close(self) -> None:
        self._loop_end.release()
        await self._connection.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- starting ------------------------------------------------------------------------------------
    async def start_workflow(
        self,
        workflow: WorkflowRef[ReturnType],
        *args: Any,
        id: str,
        id_reuse_policy: IdReusePolicy = "allow_duplicate",
        execution_timeout: timedelta | None = None,
        request_id: str | None = None,
    ) -> ClientWorkflowHandle[ReturnType]:
        """Returns once admission took the start into the cell; retrying with the same ``request_id``
        returns the same run."""
        request = StartRequest(
            request_id=request_id or str(uuid.uuid4()),
            workflow_type=workflow_name_of(workflow),
            workflow_id=id,
            input=self.converter.to_payloads(list(args), "workflow input"),
            id_reuse_policy=id_reuse_policy,
            execution_timeout=execution_timeout,
        )
        reply = await self._call(request)
        return ClientWorkflowHandle(self, id, reply.run_id, _return_type(workflow))

    async def signal_with_start(
        self,
        workflow: WorkflowRef[ReturnType],
        *args: Any,
        id: str,
        signal: Callable[..., Any] | str,
        signal_args: Sequence[Any] = (),
        execution_timeout: timedelta | None = None,
    ) -> ClientWorkflowHandle[ReturnType]:
        request = StartRequest(
            request_id=str(uuid.uuid4()),
            workflow_type=workflow_name_of(workflow),
            workflow_id=id,
            input=self.converter.to_payloads(list(args), "workflow input"),
            execution_timeout=execution_timeout,
            signal=SignalSpec(
                name=handler_name_of(signal, SIGNAL_MARK),
                input=self.converter.to_payloads(list(signal_args), "signal input"),
            ),
        )
        reply = await self._call(request)
        return ClientWorkflowHandle(self, id, reply.run_id, _return_type(workflow))

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> ClientWorkflowHandle[Any]:
        return ClientWorkflowHandle(self, workflow_id, run_id, Any)

    def get_workflow_handle_for(
        self, workflow: WorkflowRef[ReturnType], workflow_id: str, run_id: str | None = None
    ) -> ClientWorkflowHandle[ReturnType]:
        return ClientWorkflowHandle(self, workflow_id, run_id, _return_type(workflow))

    async def list_workflows(
        self,
        status: str | None = None,
        type: str | None = None,
        *,
        query: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        if query is None:
            reply = await self._call(ListRequest(status=status, workflow_type=type, limit=min(limit, 1000)))
            return reply.runs or []
        if status is not None or type is not None:
            raise ValueError("list by a query or by status and type, not both (a query says both)")
        runs: list[dict[str, Any]] = []
        token: str | None = None
        while len(runs) < limit:
            page = min(limit - len(runs), 1000)
            reply = await self._call(ListRequest(query=query, page_token=token, limit=page))
            runs.extend(reply.runs or [])
            token = reply.next_page_token
            if token is None:
                break
        return runs

    async def count_workflows(self, query: str = "") -> int:
        reply = await self._call(CountRequest(query=query))
        return reply.count or 0

    # -- schedules -----------------------------------------------------------------------------------
    async def create_schedule(
        self,
        id: str,
        workflow: WorkflowRef[Any] | str,
        args: Sequence[Any] = (),
        *,
        spec: ScheduleSpec,
        overlap: OverlapPolicy = DEFAULT_OVERLAP_POLICY,
        catchup_window: timedelta = DEFAULT_CATCHUP_WINDOW,
        paused: bool = False,
        note: str = "",
    ) -> ScheduleHandle:
        """Make schedule ``id`` of this namespace: ``workflow(*args)`` started at each time of ``spec``
        (``args`` plain JSON values), under ``overlap`` while an earlier run is open, catching up on
        actions missed within ``catchup_window`` after an outage. Raises ``ScheduleAlreadyExistsError``
        for an id the namespace has, ``UnknownWorkflowTypeError``-like refusals as
        ``MalformedRequestError`` with the reason."""
        definition = {
            "schedule_id": id,
            "workflow_type": workflow if isinstance(workflow, str) else workflow_name_of(workflow),
            "args": list(args),
            "spec": spec.model_dump(mode="json"),
            "overlap": overlap,
            "catchup_window": catchup_window,
            "paused": paused,
            "note": note,
        }
        await self._call(schedule_handle.create_command(id, definition), CONTROL_REQUEST_TIMEOUT)
        return ScheduleHandle(self, id)

    def get_schedule_handle(self, id: str) -> ScheduleHandle:
        return ScheduleHandle(self, id)

    async def list_schedules(self) -> list[dict[str, Any]]:
        """The namespace's schedules: id, workflow type, spec, whether paused."""
        reply = await self._call(schedule_handle.list_command(), CONTROL_REQUEST_TIMEOUT)
        return reply.schedules or []

    # -- batch operations ----------------------------------------------------------------------------
    async def start_batch(
        self,
        operation: BatchOperation,
        query: str,
        *,
        batch_id: str | None = None,
        reason: str = "",
        signal: Callable[..., Any] | str | None = None,
        signal_args: Sequence[Any] = (),
        rate: float = DEFAULT_RATE,
    ) -> BatchHandle:
        """Terminate, cancel or signal (``signal(*signal_args)``, plain JSON values) every run of the
        namespace that ``query`` matches (the visibility query language of ``list_workflows``), at most
        ``rate`` runs a second, as a durable batch that resumes after a crash and acts on each run once.
        Returns once the batch started; its handle's ``describe()`` follows it. A bad query raises
        ``MalformedRequestError`` pointing at the token."""
        definition: dict[str, Any] = {
            "batch_id": batch_id or f"batch-{uuid.uuid4().hex[:12]}",
            "operation": operation,
            "query": query,
            "reason": reason,
            "rate": rate,
        }
        if signal is not None:
            definition["signal_name"] = handler_name_of(signal, SIGNAL_MARK)
            definition["signal_input"] = list(signal_args)
        reply = await self._call(batch_handle.start_command(definition), CONTROL_REQUEST_TIMEOUT)
        started = reply.batch or {}
        return BatchHandle(self, definition["batch_id"], started.get("matching"))

    def get_batch_handle(self, batch_id: str) -> BatchHandle:
        return BatchHandle(self, batch_id)

    async def list_batches(self) -> list[dict[str, Any]]:
        """The namespace's batches, newest first: id, operation, state, counts."""
        reply = await self._call(batch_handle.list_command(), CONTROL_REQUEST_TIMEOUT)
        return reply.batches or []

    # -- the wire ------------------------------------------------------------------------------------
    async def _call(
        self, request: _Request, timeout: float | None = None, *, check: bool = True
    ) -> IngressReply:
        """Send ``request`` until it is answered (again after a lost connection or a silence: requests
        are idempotent by their request id) or ``timeout`` passes; an error answered raises unless
        ``check`` is off."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.request_timeout if timeout is None else timeout)
        pause, problem, silence = RETRY_FIRST_SECONDS, "no answer", ATTEMPT_SECONDS
        answered: asyncio.Future[IngressReply] = loop.create_future()
        correlations: list[str] = []  # one per copy sent: the answer to any of them is the answer
        try:
            while True:
                reconnected = self._reconnected
                wait = min(silence, deadline - loop.time())
                try:
                    if wait > 0:
                        await self._attempt(request, answered, correlations, reconnected, wait)
                except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if answered.done():
                    break
                if loop.time() >= deadline:
                    raise ServiceUnavailableError(
                        f"the namespace's ingress did not answer a {request.kind} request in "
                        f"{self.request_timeout if timeout is None else timeout:.0f} s ({problem})"
                    )
                if not reconnected.is_set():  # a silence, not a lost connection: ask less often
                    silence = min(ATTEMPT_MAX_SECONDS, silence * 2)
                pause = await self._pause_before_retry(pause, deadline)
        finally:
            for correlation in correlations:
                self._pending.pop(correlation, None)
        reply = answered.result()
        if check and not reply.ok:
            _raise(reply, request)
        return reply

    async def _pause_before_retry(self, pause: float, deadline: float) -> float:
        """Wait ``pause`` (with jitter, not past ``deadline``), or less if the connection comes back
        meanwhile; the pause before the retry after that."""
        left = deadline - asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reconnected.wait(), min(left, pause * random.uniform(0.5, 1.0)))
        return min(RETRY_MAX_SECONDS, pause * 2)

    async def _attempt(
        self,
        request: _Request,
        answered: asyncio.Future[IngressReply],
        correlations: list[str],
        reconnected: asyncio.Event,
        wait: float,
    ) -> None:
        """Send a copy, then wait up to ``wait`` for ``answered`` (to this copy or an earlier one), or
        until the connection is lost."""
        correlation = str(uuid.uuid4())
        correlations.append(correlation)
        self._pending[correlation] = answered
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                request.model_dump_json().encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                correlation_id=correlation,
                reply_to=self._replies.name,
                type=request.kind,
                headers=inject_amqp_headers({}),
            ),
            routing_key=INGRESS_QUEUE,
            timeout=wait,
        )
        lost: asyncio.Future[Any] = asyncio.ensure_future(reconnected.wait())
        try:
            await asyncio.wait({answered, lost}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        if message.correlation_id and message.correlation_id in self._pending:
            future = self._pending[message.correlation_id]
            if not future.done():
                try:
                    future.set_result(IngressReply.model_validate_json(message.body))
                except ValidationError as exc:
                    future.set_exception(MalformedRequestError(f"unreadable reply from admission: {exc}"))
            return
        if message.type == "run_closed":
            closed = RunClosed.model_validate_json(message.body)
            self._heard_closes[closed.workflow_id] = closed
            self._heard_closes.move_to_end(closed.workflow_id)
            while len(self._heard_closes) > CLOSES_REMEMBERED:
                self._heard_closes.popitem(last=False)
            for waiter in self._closed_runs.pop(closed.workflow_id, []):
                if not waiter.done():
                    waiter.set_result(closed)

    async def _watch_closes(self, workflow_id: str) -> None:
        """Hear the closes of ``workflow_id``'s runs (the binding comes back with every reconnect)."""
        if workflow_id in self._bound:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        pause = RETRY_FIRST_SECONDS
        while True:
            try:
                exchange = await self._channel.get_exchange(RESULTS_EXCHANGE, ensure=False)
                await self._replies.bind(exchange, routing_key=close_routing_key(workflow_id))
            except (AMQPError, ConnectionError, RuntimeError) as exc:
                if loop.time() >= deadline:
                    raise ServiceUnavailableError(
                        f"cannot listen for the closes of {workflow_id!r}: {exc}"
                    ) from None
                pause = await self._pause_before_retry(pause, deadline)
                continue
            self._bound.add(workflow_id)
            return


class ClientWorkflowHandle(Generic[ReturnType]):
    """A ``WorkflowHandle`` of a ``Client``: requests go through the namespace's ingress."""

    def __init__(self, client: Client, workflow_id: str, run_id: str | None, return_type: Any) -> None:
        self.client = client
        self.id = workflow_id
        self.run_id = run_id
        self._return_type = return_type

    async def describe(self, *, run_id: str | None = None) -> WorkflowDescription:
        """The workflow's latest run (or its run ``run_id``)."""
        reply = await self.client._call(DescribeRequest(workflow_id=self.id, run_id=run_id))
        d = reply.description or {}
        return WorkflowDescription(
            workflow_id=d["workflow_id"],
            run_id=d["run_id"],
            workflow_type=d["workflow_type"],
            status=d["status"],
            start_time=datetime.fromisoformat(d["start_time"]),
            close_time=datetime.fromisoformat(d["close_time"]) if d.get("close_time") else None,
            history_length=d["history_length"],
            pending_activities=d["pending_activities"],
            pending_timers=d["pending_timers"],
            blocked_reason=d.get("blocked_reason"),
            search_attributes=d.get("search_attributes") or {},
            new_run_id=d.get("new_run_id"),
            reset_run_id=d.get("reset_run_id"),
            reset_from_run_id=d.get("reset_from_run_id"),
            reset_point=d.get("reset_point"),
        )

    async def reset(
        self,
        to: int | str = "last-workflow-task",
        *,
        reason: str = "",
        reapply_signals: bool = True,
        run_id: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """See ``WorkflowHandle.reset``: answered by the cell once the new run is written."""
        try:
            target = reset_target(to)
        except ResetRefused as exc:
            raise WorkflowResetError(str(exc)) from None
        reply = await self.client._call(
            ResetRequest(
                request_id=request_id or str(uuid.uuid4()),
                workflow_id=self.id,
                run_id=run_id,
                to=target,
                reason=reason,
                reapply_signals=reapply_signals,
            )
        )
        if reply.run_id is None:
            raise MalformedRequestError("the cell answered a reset without the new run's id")
        self.run_id = reply.run_id
        return reply.run_id

    async def result(self, timeout: float | None = None) -> ReturnType:
        """The workflow's result, whether it closed before or after this call; follows continue-as-new.
        Raises ``WorkflowFailureError`` if it did not complete, ``TimeoutError`` after ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                closed = await self._next_close()
                # A run that went on in another: continued as new, or terminated by a reset.
                if closed.new_run_id is None or closed.status not in ("continued_as_new", "terminated"):
                    return self._outcome(closed)
                self.run_id = closed.new_run_id

    async def _next_close(self) -> RunClosed:
        client = self.client
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RunClosed] = loop.create_future()
        client._closed_runs.setdefault(self.id, []).append(waiter)
        try:
            # Listening before looking: a close between the two is not missed.
            await client._watch_closes(self.id)
            while True:
                reconnected = client._reconnected
                heard = client._heard_closes.get(self.id)
                if heard is not None and self.run_id is not None and heard.run_id == self.run_id:
                    return heard
                # Looking while listening: on a busy ingress the close may be announced long before
                # the answer comes.
                looking = asyncio.ensure_future(self._closed_now())
                # A close announced while the connection was lost is not heard: look again after it.
                lost = asyncio.ensure_future(reconnected.wait())
                pending: set[asyncio.Future[Any]] = {waiter, looking, lost}
                try:
                    while True:
                        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        if waiter in done:
                            closed = waiter.result()
                            if (
                                self.run_id is None
                                or closed.run_id == self.run_id
                                or closed.status != "continued_as_new"
                            ):
                                return closed
                            pending.discard(waiter)
                            waiter = loop.create_future()
                            client._closed_runs.setdefault(self.id, []).append(waiter)
                            pending.add(waiter)
                        if looking in done:
                            pending.discard(looking)
                            looked = looking.result()
                            if looked is not None:
                                return looked
                        if lost in done:
                            break
                finally:
                    looking.cancel()
                    lost.cancel()
        finally:
            # A call given up (its timeout) leaves no waiter behind to swallow a close meant for the next.
            waiter.cancel()
            waiting = client._closed_runs.get(self.id)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del client._closed_runs[self.id]

    async def _closed_now(self) -> RunClosed | None:
        """This handle's run as a close, if it is closed already."""
        try:
            reply = await self.client._call(DescribeRequest(workflow_id=self.id))
            d = reply.description or {}
        except WorkflowNotFoundError:
            if self.run_id is None:
                raise
            d = {}  # admitted, not yet written by the engine: its close will be announced
        # The latest run answers only if it is this handle's run (another one is an earlier run of the
        # id, while this handle's start is still on its way in).
        mine = bool(d) and (self.run_id is None or d["run_id"] == self.run_id)
        if not mine or d["status"] in OPEN_STATUSES:
            return None
        return RunClosed(
            namespace="",
            workflow_id=self.id,
            run_id=d["run_id"],
            status=d["status"],
            result=Payload.model_validate(d["result"]) if d.get("result") else None,
            failure=Failure.model_validate(d["failure"]) if d.get("failure") else None,
            new_run_id=d.get("new_run_id"),
        )

    def _outcome(self, closed: RunClosed) -> ReturnType:
        outcome = run_outcome(
            self.id, closed.status, closed.result, closed.failure, self.client.converter, self._return_type
        )
        return typing.cast(ReturnType, outcome)  # decoded into the run method's return type

    async def signal(self, signal: Callable[..., Any] | str, *args: Any) -> None:
        await self._require_open()
        await self.client._call(
            SignalRequest(
                request_id=str(uuid.uuid4()),
                workflow_id=self.id,
                signal=SignalSpec(
                    name=handler_name_of(signal, SIGNAL_MARK),
                    input=self.client.converter.to_payloads(list(args), "signal input"),
                ),
            )
        )

    async def query(self, query: Callable[..., QueryType] | str, *args: Any) -> QueryType:
        """Ask the run (the latest of this id, or this handle's run) through one of its query handlers;
        answered by the cell after everything sent to the run before it. Raises ``ApplicationError`` if
        the run does not answer (unknown query, failing handler) and ``WorkflowNotFoundError``."""
        reply = await self.client._call(
            QueryRequest(
                request_id=str(uuid.uuid4()),
                workflow_id=self.id,
                query_name=handler_name_of(query, QUERY_MARK),
                input=self.client.converter.to_payloads(list(args), "query input"),
            )
        )
        if reply.result is None:
            raise MalformedRequestError("the cell answered a query without a result")
        answer = self.client.converter.from_payload(reply.result, _return_type(query))
        return typing.cast(QueryType, answer)  # decoded into the query method's return type

    async def execute_update(
        self, update: UpdateRef[UpdateType], *args: Any, id: str | None = None, timeout: float | None = None
    ) -> UpdateType:
        """Run the update and return its handler's result (see ``WorkflowHandle.execute_update``). The
        request is sent again under the same update id after a silence or a lost connection, and the
        run takes it once: each copy only waits for the one outcome."""
        name = update_name_of(update)
        input = self.client.converter.to_payloads(list(args), "update input")
        update_id = id or str(uuid.uuid4())
        request = UpdateRequest(request_id=update_id, workflow_id=self.id, update_name=name, input=input)
        reply = await self._update(request, timeout)
        return typing.cast(UpdateType, self._update_outcome(request, reply, _return_type(update)))

    async def start_update(
        self, update: UpdateRef[UpdateType], *args: Any, id: str | None = None, timeout: float | None = None
    ) -> ClientWorkflowUpdateHandle[UpdateType]:
        """Returns once the run took the update, with a handle on its outcome."""
        name = update_name_of(update)
        input = self.client.converter.to_payloads(list(args), "update input")
        request = UpdateRequest(
            request_id=id or str(uuid.uuid4()),
            workflow_id=self.id,
            update_name=name,
            input=input,
            wait_for="accepted",
        )
        reply = await self._update(request, timeout)
        handle = ClientWorkflowUpdateHandle[UpdateType](self, request, _return_type(update))
        if reply.update_stage != "accepted":
            # Finished already (an id sent again): its handle holds the outcome, a failure too; a refusal
            # (or no run to take it) is raised here.
            handle._finished = reply
            if reply.error is None or reply.error.type != "update_failed":
                self._update_outcome(request, reply, handle._return_type)
        return handle

    async def _update(self, request: UpdateRequest, timeout: float | None) -> IngressReply:
        """The run's answer to the update, however long its handler takes (or ``timeout``). An update
        the run left to the next run of its chain (it continued as new before taking it) is sent on."""
        async with asyncio.timeout(timeout):
            for _ in range(CONTINUED_RUNS_FOLLOWED):
                reply = await self.client._call(request, timeout=math.inf, check=False)
                error = reply.error
                if error is None or error.type != "not_found" or error.run_status != "continued_as_new":
                    return reply
        raise WorkflowNotFoundError(f"workflow {self.id!r} kept continuing as new without taking the update")

    def _update_outcome(self, request: UpdateRequest, reply: IngressReply, return_type: Any) -> Any:
        outcome: UpdateOutcome
        error = reply.error
        if reply.ok:
            outcome = reply.update_stage or "completed"
        elif error is not None and error.type == "update_rejected":
            outcome = "rejected"
        elif error is not None and error.type == "update_failed":
            outcome = "failed"
        elif error is not None and error.type == "not_found":
            outcome = "run_closed"
        else:
            _raise(reply, request)
        return update_outcome(
            self.id,
            request.request_id,
            request.update_name,
            outcome,
            reply.result,
            error.failure if error is not None else None,
            error.message if error is not None else "",
            self.client.converter,
            return_type,
        )

    async def cancel(self, reason: str = "") -> None:
        await self._require_open()
        await self.client._call(
            CancelRequest(request_id=str(uuid.uuid4()), workflow_id=self.id, reason=reason)
        )

    async def terminate(self, reason: str = "") -> None:
        await self._require_open()
        await self.client._call(
            CancelRequest(request_id=str(uuid.uuid4()), workflow_id=self.id, reason=reason, terminate=True)
        )

    async def _require_open(self) -> None:
        if (await self.describe()).status not in OPEN_STATUSES:
            raise WorkflowNotFoundError(f"workflow {self.id!r} is not running")


class ClientWorkflowUpdateHandle(Generic[UpdateType]):
    """A ``WorkflowUpdateHandle`` of a ``Client``: asking for the result sends the update again under its
    id, which the run answers with its outcome once it has one."""

    def __init__(self, handle: ClientWorkflowHandle[Any], request: UpdateRequest, return_type: Any) -> None:
        self._handle = handle
        self._request = request.model_copy(update={"wait_for": "completed"})
        self._return_type = return_type
        self._finished: IngressReply | None = None
        self.id = request.request_id
        self.workflow_id = handle.id

    async def result(self, timeout: float | None = None) -> UpdateType:
        reply = self._finished or await self._handle._update(self._request, timeout)
        self._finished = reply
        return typing.cast(UpdateType, self._handle._update_outcome(self._request, reply, self._return_type))


def _return_type(target: object) -> Any:
    """The type a run method's result (or a query or update method's answer) decodes into; ``Any`` for a
    name."""
    if isinstance(target, str):
        return Any
    try:
        return typing.get_type_hints(target).get("return", Any)
    except Exception:  # an annotation that does not resolve here: decode as plain JSON
        return Any


def _raise(reply: IngressReply, request: _Request) -> typing.NoReturn:
    assert reply.error is not None
    message = reply.error.message
    if isinstance(request, ScheduleCommand):
        if reply.error.type == "not_found":
            raise ScheduleNotFoundError(message)
        if reply.error.type == "already_started":
            raise ScheduleAlreadyExistsError(message)
    if isinstance(request, BatchCommand):
        if reply.error.type == "not_found":
            raise BatchNotFoundError(message)
        if reply.error.type == "already_started":
            raise BatchAlreadyRunningError(message)
    match reply.error.type:
        case "unavailable":
            raise ServiceUnavailableError(message)
        case "already_started":
            raise WorkflowAlreadyStartedError(getattr(request, "workflow_id", ""), reply.run_id, message)
        case "payload_too_large":
            raise PayloadTooLargeError(reply.error.size or 0, reply.error.limit or 0, "request")
        case "unknown_workflow_type":
            raise UnknownWorkflowTypeError(getattr(request, "workflow_type", ""), reply.error.known or [])
        case "quota_exceeded":
            raise QuotaExceededError(message)
        case "namespace_suspended":
            raise NamespaceSuspendedError(message)
        case "not_found":
            raise WorkflowNotFoundError(message)
        case "reset_refused":
            raise WorkflowResetError(message)
        case "query_failed":
            raise ApplicationError(message, type=reply.error.failure_type)
        case _:
            raise MalformedRequestError(message)
