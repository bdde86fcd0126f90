"""What ops and tests use without the tenant edge: start and steer workflows through the cell's topic,
and read runs and histories from the cell's database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aiokafka import AIOKafkaProducer

from perdure.infra.settings import Settings
from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core.failures import ApplicationError
from perdure.platform.core.outbox import UpdateOutcome
from perdure.platform.core.payloads import Payload, default_converter
from perdure.platform.core.reset import ResetRefused, reset_target
from perdure.platform.core.start_rules import IdReusePolicy
from perdure.platform.core.visibility_query import parse_query
from perdure.platform.messaging.task_producer import TaskProducer, new_producer
from perdure.platform.protocol.cell_wire import TaskEnvelope
from perdure.platform.protocol.ingress_wire import IngressReply
from perdure.platform.stores.control_store import NamespaceRecord
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.run_search import SearchPage, count_runs, search_runs
from perdure.platform.stores.run_store import RunStore
from perdure.platform.stores.visibility import describe_run
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url
from perdure.tenants.client_errors import WorkflowNotFoundError, WorkflowResetError
from perdure.tenants.update_outcome import update_outcome

# How many times an update is sent on to the next run of a chain that continued as new before taking it.
CONTINUED_RUNS_FOLLOWED = 10


class OpsClient:
    def __init__(
        self, settings: Settings, databases: Databases, namespace: NamespaceRecord, producer: AIOKafkaProducer
    ) -> None:
        self.settings = settings
        self.databases = databases
        self.namespace = namespace
        self.store: RunStore = databases.runs(settings, namespace.cell)
        self.tasks = TaskProducer(producer, namespace.cell)
        self._producer = producer

    @classmethod
    async def connect(cls, settings: Settings, namespace: str) -> OpsClient:
        databases = Databases.connect(settings)
        record = await databases.control.get_namespace(namespace)
        producer = new_producer(settings.endpoints(record.cell))
        await producer.start()
        return cls(settings, databases, record, producer)

    async def close(self) -> None:
        await self._producer.stop()
        await self.databases.close()

    async def __aenter__(self) -> OpsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, workflow_id: str, message: Any, **extra: Any) -> None:
        await self.tasks.send(
            TaskEnvelope(namespace=self.namespace.name, workflow_id=workflow_id, message=message, **extra)
        )

    async def start_workflow(
        self,
        workflow_type: str,
        *args: Any,
        id: str,
        request_id: str | None = None,
        execution_timeout: timedelta | None = None,
        id_reuse_policy: IdReusePolicy = "allow_duplicate",
    ) -> str:
        """Enqueue a start; returns the request id (the run id follows from it)."""
        request_id = request_id or str(uuid.uuid4())
        start = m.StartWorkflow(
            request_id=request_id,
            workflow_type=workflow_type,
            workflow_id=id,
            input=default_converter.to_payloads(list(args), "workflow input"),
            execution_timeout=execution_timeout,
        )
        await self._send(id, start, id_reuse_policy=id_reuse_policy)
        return request_id

    async def start_workflows(self, workflow_type: str, starts: list[tuple[str, list[Any]]]) -> None:
        """Enqueue many starts at once (id, arguments): one round of Kafka acknowledgements."""
        await self.tasks.send_all(
            [
                TaskEnvelope(
                    namespace=self.namespace.name,
                    workflow_id=workflow_id,
                    message=m.StartWorkflow(
                        request_id=str(uuid.uuid4()),
                        workflow_type=workflow_type,
                        workflow_id=workflow_id,
                        input=default_converter.to_payloads(args, "workflow input"),
                    ),
                )
                for workflow_id, args in starts
            ]
        )

    async def signal(self, workflow_id: str, name: str, *args: Any) -> None:
        await self._send(
            workflow_id,
            m.SignalWorkflow(
                request_id=str(uuid.uuid4()),
                signal_name=name,
                input=default_converter.to_payloads(list(args)),
            ),
        )

    async def query(self, workflow_id: str, name: str, *args: Any, timeout: float = 30.0) -> Any:
        """Ask the workflow's partition owner, as a tenant's query does; the answer comes back on a
        queue of this client in the namespace's vhost. Raises ``ApplicationError`` if the run does not
        answer, ``WorkflowNotFoundError`` if there is no run."""
        correlation = str(uuid.uuid4())
        connection = await aio_pika.connect(
            namespace_amqp_url(self.settings, self.namespace.cell, self.namespace.vhost)
        )
        try:
            channel = await connection.channel()
            replies = await channel.declare_queue(exclusive=True)
            answers: asyncio.Queue[IngressReply] = asyncio.Queue()

            async def on_reply(message: AbstractIncomingMessage) -> None:
                if message.correlation_id == correlation:
                    await answers.put(IngressReply.model_validate_json(message.body))

            await replies.consume(on_reply, no_ack=True)
            await self._send(
                workflow_id,
                m.QueryWorkflow(
                    request_id=correlation, query_name=name, input=default_converter.to_payloads(list(args))
                ),
                reply_to=replies.name,
                correlation_id=correlation,
            )
            reply = await asyncio.wait_for(answers.get(), timeout)
        finally:
            await connection.close()
        if reply.ok and reply.result is not None:
            return default_converter.from_payload(reply.result)
        error = reply.error
        if error is not None and error.type == "not_found":
            raise WorkflowNotFoundError(error.message)
        raise ApplicationError(
            error.message if error else "no answer", type=error.failure_type if error else None
        )

    async def update(
        self, workflow_id: str, name: str, *args: Any, id: str | None = None, timeout: float = 60.0
    ) -> Any:
        """Run one of the workflow's update handlers, as a tenant's update does, and return its result
        (plain JSON). ``id`` names the update (a new uuid by default): sent again with the same id, it
        is answered with the same outcome instead of running again. Raises ``WorkflowUpdateFailedError``
        if the run refused it or its handler failed, ``WorkflowNotFoundError`` if no run takes it, and
        ``TimeoutError`` if no answer comes within ``timeout`` seconds."""
        update_id = id or str(uuid.uuid4())
        message = m.UpdateWorkflow(
            update_id=update_id, update_name=name, input=default_converter.to_payloads(list(args))
        )
        connection = await aio_pika.connect(
            namespace_amqp_url(self.settings, self.namespace.cell, self.namespace.vhost)
        )
        try:
            channel = await connection.channel()
            replies = await channel.declare_queue(exclusive=True)
            answers: asyncio.Queue[tuple[str | None, IngressReply]] = asyncio.Queue()

            async def on_reply(incoming: AbstractIncomingMessage) -> None:
                await answers.put((incoming.correlation_id, IngressReply.model_validate_json(incoming.body)))

            await replies.consume(on_reply, no_ack=True)
            async with asyncio.timeout(timeout):
                for _ in range(CONTINUED_RUNS_FOLLOWED):
                    correlation = str(uuid.uuid4())
                    await self._send(workflow_id, message, reply_to=replies.name, correlation_id=correlation)
                    while (answer := await answers.get())[0] != correlation:
                        pass
                    reply = answer[1]
                    error = reply.error
                    if error is None or error.type != "not_found" or error.run_status != "continued_as_new":
                        break
        finally:
            await connection.close()
        error = reply.error
        outcome: dict[str, UpdateOutcome] = {
            "update_rejected": "rejected",
            "update_failed": "failed",
            "not_found": "run_closed",
        }
        if error is not None and error.type not in outcome:
            raise ApplicationError(error.message, type=error.type)
        return update_outcome(
            workflow_id,
            update_id,
            name,
            "completed" if error is None else outcome[error.type],
            reply.result,
            error.failure if error is not None else None,
            error.message if error is not None else "",
            default_converter,
            Any,
        )

    async def cancel(self, workflow_id: str, reason: str = "") -> None:
        await self._send(workflow_id, m.CancelWorkflowRequest(request_id=str(uuid.uuid4()), reason=reason))

    async def terminate(self, workflow_id: str, reason: str = "") -> None:
        await self._send(workflow_id, m.TerminateWorkflowRequest(request_id=str(uuid.uuid4()), reason=reason))

    async def reset(
        self,
        workflow_id: str,
        to: int | str,
        *,
        run_id: str | None = None,
        reason: str = "",
        reapply_signals: bool = True,
        request_id: str | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Reset the workflow's latest run (or ``run_id``) to ``to`` (docs/reset.md), as a tenant's
        reset does, and return the new run's id once the partition's owner has written it. The same
        ``request_id`` sent again makes no second run. Raises ``WorkflowResetError`` (the point is
        none: its message names the valid ones), ``WorkflowNotFoundError`` and ``TimeoutError``."""
        try:
            target = reset_target(to)
        except ResetRefused as exc:
            raise WorkflowResetError(str(exc)) from None
        message = m.ResetWorkflow(
            request_id=request_id or str(uuid.uuid4()),
            to=target,
            reason=reason,
            reapply_signals=reapply_signals,
        )
        correlation = str(uuid.uuid4())
        connection = await aio_pika.connect(
            namespace_amqp_url(self.settings, self.namespace.cell, self.namespace.vhost)
        )
        try:
            channel = await connection.channel()
            replies = await channel.declare_queue(exclusive=True)
            answers: asyncio.Queue[IngressReply] = asyncio.Queue()

            async def on_reply(incoming: AbstractIncomingMessage) -> None:
                if incoming.correlation_id == correlation:
                    await answers.put(IngressReply.model_validate_json(incoming.body))

            await replies.consume(on_reply, no_ack=True)
            await self._send(
                workflow_id, message, run_id=run_id, reply_to=replies.name, correlation_id=correlation
            )
            reply = await asyncio.wait_for(answers.get(), timeout)
        finally:
            await connection.close()
        if reply.ok and reply.run_id:
            return reply.run_id
        error = reply.error
        if error is not None and error.type == "not_found":
            raise WorkflowNotFoundError(error.message)
        if error is not None and error.type == "reset_refused":
            raise WorkflowResetError(error.message)
        raise ApplicationError(error.message if error else "no answer", type=error.type if error else None)

    async def redrive(self, workflow_id: str) -> None:
        await self._send(workflow_id, m.RedriveRun(request_id=str(uuid.uuid4())))

    async def _run_document(self, workflow_id: str, run_id: str | None) -> dict[str, Any]:
        """The workflow's latest run, or its run ``run_id``."""
        if run_id is None:
            document = await self.store.latest_run(self.namespace.name, workflow_id)
        else:
            document = await self.store.run(run_id)
            if document is not None and (document["namespace"], document["workflow_id"]) != (
                self.namespace.name,
                workflow_id,
            ):
                document = None
        if document is None:
            which = f"run {run_id} of workflow" if run_id else "workflow"
            raise WorkflowNotFoundError(f"no {which} {workflow_id!r} in namespace {self.namespace.name!r}")
        return document

    async def describe(self, workflow_id: str, run_id: str | None = None) -> dict[str, Any]:
        document = await self._run_document(workflow_id, run_id)
        description = describe_run(document)
        if description["result"]:
            description["result"] = default_converter.from_payload(
                Payload.model_validate(description["result"])
            )
        return description

    async def history(self, workflow_id: str, run_id: str | None = None) -> list[h.HistoryEvent]:
        document = await self._run_document(workflow_id, run_id)
        return await self.store.read_history(document["_id"], document)

    async def search(self, query: str, *, limit: int = 100, page_token: str | None = None) -> SearchPage:
        """A page of the namespace's runs that a visibility query matches (docs/visibility.md); raises
        ``QueryError`` pointing at what is wrong, or saying what to add for a query no index serves."""
        parsed = parse_query(query, await self.databases.control.search_attributes_of(self.namespace.name))
        return await search_runs(
            self.store,
            self.namespace.name,
            parsed,
            page_token=page_token,
            limit=limit,
            max_unserved_runs=self.settings.visibility_max_unserved_runs,
        )

    async def count(self, query: str = "") -> int:
        """How many of the namespace's runs a visibility query matches."""
        parsed = parse_query(query, await self.databases.control.search_attributes_of(self.namespace.name))
        return await count_runs(
            self.store,
            self.namespace.name,
            parsed,
            max_unserved_runs=self.settings.visibility_max_unserved_runs,
        )

    async def list(
        self, status: str | None = None, workflow_type: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self.store.list_runs(
            self.namespace.name, status=status, workflow_type=workflow_type, limit=limit
        )
