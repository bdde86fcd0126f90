"""``MoveNamespace``: a namespace handed from its cell to another, its open runs with it, its clients'
connection string unchanged (the cells share their brokers: the namespace keeps its vhost).

The steps (each an activity, each safe to run again after a crash):

1. **hold**: the namespace's status becomes ``moving``. Its cell's processes stop taking its requests
   (they wait in its ingress queue) and its workers' reports (they wait in its reports queue); their
   engines keep, rather than apply, every record of it that reaches the cell's topic (a timer firing,
   a late answer): ``held_records``. Its workers go on (what they finish waits as a report).
2. **drain**: once every live process of the cell reports that it holds the namespace, the records
   that reached the topic before are applied: the move waits until the engine's group has committed
   past the topic's ends as of that moment. The runs' documents are final from then on.
3. **copy** the runs (open and closed), their histories and pointers to the target cell's database,
   each in the partition it takes there.
4. **switch**: the namespace's cell becomes the target, its status what it was. The target's processes
   take its requests and reports and arm its runs' timers; the source's forward any record of it that
   still reaches their topic to the target's.
5. **hand over** the held records, in their order, to the target's topic, once no process of the
   source holds the namespace any more.
6. **clean**: the source's copies of the runs and the held records go.

Usage is billed once: each action is metered by the engine that applies it, and a cell meters the
storage of the namespaces it serves only.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from perdure.infra.consumer_backlog import ConsumerBacklog
from perdure.platform.control.control_app import control_app
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.control_steps import run_step
from perdure.platform.control.workflow_ids import MOVE_NAMESPACE
from perdure.platform.messaging.task_producer import TaskProducer, new_producer
from perdure.platform.protocol.cell_wire import TaskEnvelope, engine_group, execution_key
from perdure.platform.stores.control_store import ControlError
from perdure.platform.stores.namespace_handover import copy_namespace_runs, remove_namespace_runs
from perdure.platform.stores.run_store import partition_of
from perdure.platform.stores.search_attributes import index_search_attribute
from perdure.tenants import ActivityError, ApplicationError, RetryPolicy, workflow

STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))
# A process that reported within this long is live: the move waits for it.
LIVE_SECONDS = 15.0
WAIT_SECONDS = 60.0  # within one attempt of a waiting step; the step is tried again after it
POLL_SECONDS = 0.2
HANDOVER_BATCH = 200


def _refused(message: str) -> ApplicationError:
    return ApplicationError(message, type="MoveRefused", non_retryable=True)


class _NotYet(Exception):
    """What a waiting step waits for has not happened within one attempt: it is tried again."""


class MoveActivities:
    def __init__(self, resources: ControlResources) -> None:
        self.resources = resources

    @control_app.activity
    async def begin_move(self, name: str, target: str) -> dict[str, Any]:
        """Check the move and hold the namespace; its source cell and when the hold began."""
        control = self.resources.control
        settings = self.resources.settings
        try:
            record = await control.get_namespace(name)
            target_cell = await control.get_cell(target)
        except ControlError as exc:
            raise _refused(str(exc)) from None
        if record.status == "moving":
            if record.moving_to != target:
                raise _refused(f"namespace {name!r} is being moved to {record.moving_to!r} already")
            return {"source": record.cell, "since": datetime.now(UTC).isoformat()}
        if name == settings.system_namespace:
            raise _refused("the system namespace is not moved: bootstrap the control plane on another cell")
        if record.cell == target:
            raise _refused(f"namespace {name!r} is on cell {target!r} already")
        if record.status not in ("active", "suspended"):
            raise _refused(f"namespace {name!r} is {record.status}: only an active or suspended one moves")
        if not target_cell.healthy:
            raise _refused(f"cell {target!r} is marked unhealthy: it takes no namespace")
        source, there = settings.endpoints(record.cell), settings.endpoints(target)
        if (source.rabbitmq_url, source.kafka_bootstrap_servers) != (
            there.rabbitmq_url,
            there.kafka_bootstrap_servers,
        ):
            raise _refused(
                f"cells {record.cell!r} and {target!r} do not share their RabbitMQ and Kafka: the "
                "namespace's clients would need a new connection string (move it by provisioning anew)"
            )
        await self.resources.runs(target).ensure_indexes()
        # The indexes of the namespace's search attributes, so its queries are served there too.
        for attribute, kind in record.search_attributes.items():
            await index_search_attribute(self.resources.runs(target), attribute, kind)
        held = await control.update_namespace_if(
            name,
            {"status": record.status, "cell": record.cell},
            status="moving",
            moving_to=target,
            status_before_move=record.status,
        )
        if held is None:
            raise ControlError(f"namespace {name!r} changed while the move began; trying again")
        return {"source": record.cell, "since": datetime.now(UTC).isoformat()}

    async def _live_reports(self, cell: str, since: datetime) -> tuple[int, list[list[str]]]:
        """How many processes of ``cell`` are live, and the ``holding`` of those that reported since."""
        fresh = datetime.now(UTC) - timedelta(seconds=LIVE_SECONDS)
        reports = await self.resources.control.processes_of(cell, fresh)
        return len(reports), [r.holding for r in reports if r.reported_at > since]

    @control_app.activity
    async def drain(self, name: str, source: str, since: str) -> dict[str, Any]:
        """Wait until every live process of the source holds the namespace, then until the engine has
        applied every record that reached the topic before."""
        began = datetime.fromisoformat(since)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            live, holding = await self._live_reports(source, began)
            if live and len(holding) == live and all(name in h for h in holding):
                break
            if time.monotonic() > deadline:
                raise _NotYet(f"{len(holding)} of {live} live processes of {source} hold {name}")
            await asyncio.sleep(POLL_SECONDS)
        cell = await self.resources.control.get_cell(source)
        backlog = ConsumerBacklog(
            self.resources.settings.endpoints(source).kafka(),
            cell.topic,
            cell.partitions,
            engine_group(source),
        )
        await backlog.start()
        try:
            ends = await backlog.end_offsets()
            while True:
                committed = await backlog.committed_offsets()
                behind = sum(max(0, ends[p] - committed.get(p, 0)) for p in ends)
                if not behind:
                    return {"processes": live, "records_drained_to": sum(ends.values())}
                if time.monotonic() > deadline:
                    raise _NotYet(f"the engine of {source} is {behind} records behind")
                await asyncio.sleep(POLL_SECONDS)
        finally:
            await backlog.stop()

    @control_app.activity
    async def copy_runs(self, name: str, source: str, target: str) -> int:
        cell = await self.resources.control.get_cell(target)
        return await copy_namespace_runs(
            self.resources.runs(source),
            self.resources.runs(target),
            name,
            lambda workflow_id: partition_of(execution_key(name, workflow_id), cell.partitions),
        )

    @control_app.activity
    async def switch(self, name: str, source: str, target: str) -> str:
        """The namespace is the target's from now on; the time of the switch."""
        control = self.resources.control
        record = await control.get_namespace(name)
        if record.cell == target and record.status != "moving":
            return datetime.now(UTC).isoformat()  # switched by an earlier attempt
        switched = await control.update_namespace_if(
            name,
            {"status": "moving", "moving_to": target, "cell": source},
            cell=target,
            status=record.status_before_move or "active",
            moving_to=None,
            status_before_move=None,
        )
        if switched is None:
            raise ControlError(f"namespace {name!r} changed during its move; trying again")
        return datetime.now(UTC).isoformat()

    @control_app.activity
    async def hand_over(self, name: str, source: str, target: str, switched_at: str) -> int:
        """Once no live process of the source holds the namespace, send what they held to the target,
        in order; the number of records handed over."""
        since = datetime.fromisoformat(switched_at)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            live, holding = await self._live_reports(source, since)
            if len(holding) == live and not any(name in h for h in holding):
                break
            if time.monotonic() > deadline:
                raise _NotYet(f"processes of {source} still hold {name}")
            await asyncio.sleep(POLL_SECONDS)
        store = self.resources.runs(source)
        producer = new_producer(self.resources.settings.endpoints(target))
        await producer.start()
        handed = 0
        try:
            tasks = TaskProducer(producer, target)
            while True:
                batch = await store.held_of(name).limit(HANDOVER_BATCH).to_list(None)
                if not batch:
                    return handed
                await tasks.send_all([TaskEnvelope.model_validate_json(d["envelope"]) for d in batch])
                await store.held.delete_many({"_id": {"$in": [d["_id"] for d in batch]}})
                handed += len(batch)
        finally:
            await producer.stop()

    @control_app.activity
    async def clean_source(self, name: str, source: str) -> int:
        record = await self.resources.control.get_namespace(name)
        if record.cell == source:  # moved back meanwhile: what is there is its own
            return 0
        return await remove_namespace_runs(self.resources.runs(source), name)


async def _step(activity: Any, *args: Any) -> Any:
    return await run_step(activity, *args, retry_policy=STEP_RETRY)


@control_app.workflow(name=MOVE_NAMESPACE)
class MoveNamespace:
    @workflow.run
    async def run(self, request: dict[str, str]) -> dict[str, Any]:
        name, target = request["name"], request["to"]
        workflow.upsert_search_attributes({"Step": "holding"})
        try:
            begun: dict[str, Any] = await workflow.execute_activity(
                MoveActivities.begin_move,
                name,
                target,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=STEP_RETRY,
            )
        except ActivityError as failure:  # refused: say why
            raise ApplicationError(
                str(failure.cause or failure), type="MoveRefused", non_retryable=True
            ) from None
        source = begun["source"]
        workflow.upsert_search_attributes({"Step": "draining"})
        drained: dict[str, Any] = await _step(MoveActivities.drain, name, source, begun["since"])
        workflow.upsert_search_attributes({"Step": "copying"})
        copied: int = await _step(MoveActivities.copy_runs, name, source, target)
        workflow.upsert_search_attributes({"Step": "switching"})
        switched_at: str = await _step(MoveActivities.switch, name, source, target)
        workflow.upsert_search_attributes({"Step": "handing over"})
        handed: int = await _step(MoveActivities.hand_over, name, source, target, switched_at)
        workflow.upsert_search_attributes({"Step": "cleaning"})
        removed: int = await _step(MoveActivities.clean_source, name, source)
        workflow.upsert_search_attributes({"Step": "moved"})
        return {
            "namespace": name,
            "from": source,
            "to": target,
            "runs_copied": copied,
            "records_handed_over": handed,
            "source_copies_removed": removed,
            "source_processes": drained["processes"],
        }
