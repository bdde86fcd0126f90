"""What a schedule does to the world, for the ``Schedule`` workflow: start its actions in the target
namespace, ask whether the action it watches still runs, cancel or terminate that action.

Starts go in through the namespace's own ingress and admission, as a tenant's start does (the tenant
``Client`` on the platform's AMQP URL at the namespace's vhost, which admission takes for the namespace):
so the namespace's rate limit, its concurrency quota and its suspension apply, and each start is the
namespace's billed ``workflow_started``. Each start names its run (a request id derived from the
schedule's run chain and the workflow id) and refuses a duplicate id: an activity retried after a crash
is answered with the run its first attempt made, and the action runs once. A start admission refuses
(a quota, a suspended namespace, a workflow type the app no longer has) is reported as refused with the
reason, not retried: the schedule records it as a skipped action."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from perdure.platform.control.control_app import control_app
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.core.definitions import UnknownWorkflowTypeError
from perdure.platform.core.payloads import PayloadTooLargeError
from perdure.platform.core.start_rules import fresh_run_id
from perdure.platform.stores.control_store import ControlError, NamespaceRecord
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url
from perdure.tenants import (
    AuthenticationError,
    Client,
    MalformedRequestError,
    NamespaceSuspendedError,
    QuotaExceededError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
    activity,
)

log = logging.getLogger(__name__)
OPEN_STATUSES = ("running", "blocked")
# A start or a stop heartbeats this often while it runs, so that one lost with its worker (a SIGKILL of
# the cell) is retried within the workflow's heartbeat timeout, not at its start-to-close timeout.
HEARTBEAT_EVERY = 2.0


class StartOutcome(BaseModel):
    workflow_id: str
    started: bool
    reason: str = ""  # why not, when refused


class ScheduleActivities:
    """What schedules do, on the process's control-plane connections and one tenant client per namespace
    vhost (opened on first use, kept: the client rides out broker restarts by itself)."""

    def __init__(self, resources: ControlResources) -> None:
        self.resources = resources
        self._clients: dict[str, Client] = {}
        self._opening = asyncio.Lock()

    @control_app.activity
    async def start_scheduled_runs(
        self, namespace: str, workflow_type: str, args: list[Any], workflow_ids: list[str], chain: str
    ) -> list[StartOutcome]:
        """Start ``workflow_type(*args)`` once under each of ``workflow_ids``, in order. ``chain`` (the
        schedule's first run id) scopes the request ids: the same schedule asking again gets the same
        runs; another schedule (or a tenant) holding the id gets a refusal."""
        async with _beating():
            return await self._start(namespace, workflow_type, args, workflow_ids, chain)

    async def _start(
        self, namespace: str, workflow_type: str, args: list[Any], workflow_ids: list[str], chain: str
    ) -> list[StartOutcome]:
        record, reason = await self._record(namespace)
        if record is None:
            return [self._refused(w, reason) for w in workflow_ids]
        try:
            client = await self._client(record)
        except AuthenticationError as exc:  # its vhost is gone, or not made yet
            return [
                self._refused(w, f"the namespace's vhost refused the platform: {exc}") for w in workflow_ids
            ]
        outcomes: list[StartOutcome] = []
        for workflow_id in workflow_ids:
            request_id = f"schedule:{chain}:{workflow_id}"
            try:
                await client.start_workflow(
                    workflow_type,
                    *args,
                    id=workflow_id,
                    id_reuse_policy="reject_duplicate",
                    request_id=request_id,
                )
            except QuotaExceededError as exc:
                # Admission counts the quota before the engine recognises a start sent again: an attempt
                # retried after its first went in meets the run it made itself.
                if await self._made(record, workflow_id, request_id):
                    outcomes.append(StartOutcome(workflow_id=workflow_id, started=True))
                else:
                    outcomes.append(self._refused(workflow_id, f"quota: {exc}"))
            except (
                WorkflowAlreadyStartedError,
                NamespaceSuspendedError,
                UnknownWorkflowTypeError,
                PayloadTooLargeError,
                MalformedRequestError,
            ) as exc:
                outcomes.append(self._refused(workflow_id, str(exc)))
            else:
                outcomes.append(StartOutcome(workflow_id=workflow_id, started=True))
        return outcomes

    @control_app.activity
    async def scheduled_run_open(self, namespace: str, workflow_id: str) -> bool:
        """Whether the latest run of ``workflow_id`` is open (running, or parked until redriven)."""
        record, _ = await self._record(namespace)
        if record is None:
            return False
        document = await self.resources.runs(record.cell).latest_run(record.name, workflow_id)
        return document is not None and document["status"] in OPEN_STATUSES

    @control_app.activity
    async def stop_scheduled_run(
        self, namespace: str, workflow_id: str, terminate: bool, reason: str
    ) -> None:
        """Cancel (or terminate) ``workflow_id``'s run, through the namespace's ingress; one that is no
        longer running is left as it is."""
        record, _ = await self._record(namespace)
        if record is None:
            return
        handle = (await self._client(record)).get_workflow_handle(workflow_id)
        try:
            async with _beating():
                if terminate:
                    await handle.terminate(reason)
                else:
                    await handle.cancel()
        except (WorkflowNotFoundError, NamespaceSuspendedError) as exc:
            log.info("scheduled run not stopped", extra={"workflow_id": workflow_id, "why": str(exc)})

    async def _record(self, namespace: str) -> tuple[NamespaceRecord | None, str]:
        try:
            record = await self.resources.control.get_namespace(namespace)
        except ControlError as exc:
            return None, str(exc)
        if record.status == "deleted":
            await self._forget_client(record)
            return None, f"namespace {namespace!r} is deleted"
        return record, ""

    async def _client(self, record: NamespaceRecord) -> Client:
        url = namespace_amqp_url(self.resources.settings, record.cell, record.vhost)
        async with self._opening:
            if url not in self._clients:
                self._clients[url] = await Client.connect(url)
        return self._clients[url]

    async def _forget_client(self, record: NamespaceRecord) -> None:
        """A deleted namespace's vhost goes: its client would try to reconnect to it for ever."""
        url = namespace_amqp_url(self.resources.settings, record.cell, record.vhost)
        async with self._opening:
            client = self._clients.pop(url, None)
        if client is not None:
            await client.close()

    async def _made(self, record: NamespaceRecord, workflow_id: str, request_id: str) -> bool:
        run_id = fresh_run_id(record.name, workflow_id, request_id)
        return await self.resources.runs(record.cell).run(run_id) is not None

    @staticmethod
    def _refused(workflow_id: str, reason: str) -> StartOutcome:
        log.info("scheduled start refused", extra={"workflow_id": workflow_id, "reason": reason})
        return StartOutcome(workflow_id=workflow_id, started=False, reason=reason)


@contextlib.asynccontextmanager
async def _beating() -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            activity.heartbeat()

    beating = asyncio.create_task(beat())
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
