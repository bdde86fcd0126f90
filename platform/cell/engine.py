"""The cell engine: consumes the cell's partitions and applies their messages to runs.

Per poll: decode (undecodable records go to the dead-letter topic), group by execution, load what is
not cached, apply each group's messages through the namespace's state machine, write every changed run
in bulk (conditional, fenced by the partition epoch), send the outbox, commit the offsets.

The commit is not waited for before the next poll is applied (it is awaited before the next commit and
before partitions are handed over): a record whose commit is lost is read again and recognised as a
duplicate, and the outbox it caused has been sent already.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from opentelemetry import metrics, trace
from opentelemetry.context import Context

from perdure.infra.outages import OUTAGES, pause
from perdure.infra.telemetry import extract_kafka_context
from perdure.platform.cell.inline_decisions import InlineDecisions
from perdure.platform.cell.outbox_sender import Addressed, OutboxSender, TenantReply
from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core import outbox as o
from perdure.platform.core.reset import ResetRefused, reset_run_id
from perdure.platform.core.run_state import RunLimits
from perdure.platform.core.start_rules import (
    AnswerWithRun,
    RefuseStart,
    SignalRun,
    decide_start,
    fresh_run_id,
    open_run_of,
)
from perdure.platform.core.state_machine import ExecutionStateMachine, TaskTimeouts, Transition
from perdure.platform.core.usage import UsageRecord, query_usage
from perdure.platform.messaging.task_producer import TaskProducer
from perdure.platform.protocol.cell_wire import DeadLetter, TaskEnvelope, UndecodableMessage, decode_envelope
from perdure.platform.protocol.ingress_wire import IngressError, IngressReply
from perdure.platform.stores.control_store import CellRecord
from perdure.platform.stores.namespace_apps import (
    LoadedNamespace,
    NamespaceApps,
    NamespaceChanges,
    NamespaceMoved,
    NamespaceUnavailable,
)
from perdure.platform.stores.run_store import (
    MAX_DOCUMENT_BYTES,
    FencedError,
    RunEntry,
    RunStore,
    RunTooLarge,
    document_size,
    partition_of,
)

# The engine waits at most this long between attempts once a dependency fails: it must resume soon
# after the dependency does.
ENGINE_RETRY_CAP_SECONDS = 2.0
log = logging.getLogger("perdure.engine")
tracer = trace.get_tracer("perdure.engine")
meter = metrics.get_meter("perdure.engine")
tasks_processed = meter.create_counter("perdure.engine.messages", description="messages applied to runs")
batch_sizes = meter.create_histogram("perdure.engine.batch_size", description="records per poll")
step_latency = meter.create_histogram("perdure.engine.batch_seconds", unit="s", description="poll to commit")
cache_lookups = meter.create_counter("perdure.engine.cache_lookups", description="run cache hits and misses")
dead_letters = meter.create_counter("perdure.engine.dead_letters", description="records sent to the DLQ")
resets = meter.create_counter("perdure.engine.resets", description="resets of runs, by outcome")
# Records behind the newest one, per owned partition, as of the last committed batch.
_lag: dict[int, int] = {}


def _observe_lag(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    return [metrics.Observation(lag, {"partition": partition}) for partition, lag in _lag.items()]


def total_lag() -> int:
    """Records not yet applied in the partitions this process owns."""
    return sum(_lag.values())


meter.create_observable_gauge(
    "perdure.engine.consumer_lag",
    callbacks=[_observe_lag],
    description="records not yet applied, per partition",
)

CACHE_LIMIT_PER_PARTITION = 5_000
MAX_POLL_RECORDS = 500
# Journal entries of sent batches are forgotten together, at most this often (see ``_forget_later``).
FORGET_EVERY_SECONDS = 1.0
# A reset copies a run's whole history (up to its history limit) and is applied in the one engine loop of
# the cell: a batch applies at most one reset per execution and this many in all; the records from the
# next reset on wait for the next batch (a burst of resets is spread over batches, none is dropped).
MAX_RESETS_PER_BATCH = 4
SLOW_WORKER_SECONDS = 30.0  # the longest a namespace whose worker answers late is not waited for
# The last offset a journal entry of handed reports claims: such a batch is no Kafka batch, so no commit
# makes its entry stale; it is forgotten once its outboxes are sent (see ``take_reports``).
HANDED_LAST_OFFSET = 2**62
# How often the engine looks for journal entries of fenced writers in its partitions (a zombie's write
# that landed after the partition was taken: its outbox is nobody else's to send).
FENCED_SWEEP_SECONDS = 5.0
ExecutionKey = tuple[str, str]


@dataclass
class PartitionCache:
    latest: collections.OrderedDict[ExecutionKey, RunEntry] = field(default_factory=collections.OrderedDict)
    by_run: dict[str, RunEntry] = field(default_factory=dict)

    def forget_namespaces(self, namespaces: frozenset[str]) -> None:
        for key in [k for k in self.latest if k[0] in namespaces]:
            del self.latest[key]
        for run_id in [r for r, e in self.by_run.items() if e.state.namespace in namespaces]:
            del self.by_run[run_id]

    def put(self, key: ExecutionKey, entry: RunEntry, *, latest: bool) -> None:
        self.by_run[entry.state.run_id] = entry
        if latest:
            self.latest[key] = entry
            self.latest.move_to_end(key)
        while len(self.latest) > CACHE_LIMIT_PER_PARTITION:
            _, evicted = self.latest.popitem(last=False)
            self.by_run.pop(evicted.state.run_id, None)


@dataclass
class _Asked:
    """A workflow task sent for an answer within the batch."""

    entry: RunEntry
    item: o.DispatchWorkflowTask
    vhost: str
    future: asyncio.Future[m.WorkflowTaskCompleted | m.WorkflowTaskFailed]


@dataclass
class Group:
    """The messages of one execution in one poll, in partition order."""

    key: ExecutionKey
    partition: int
    items: list[tuple[ConsumerRecord[bytes, bytes], TaskEnvelope]] = field(default_factory=list)
    namespace: LoadedNamespace | None = None
    # Its namespace is being moved away: the records are kept for the move to hand over.
    hold: bool = False
    # Its namespace lives on this cell no longer: the records go to the cell it moved to.
    forward_to: str | None = None
    # Reports handed over by the relay (their items follow the records'), settled with the batch.
    handed: list[_Handed] = field(default_factory=list)

    def decline_handed(self) -> None:
        """Leave the handed reports to Kafka (this group has more to it than a run's change)."""
        if self.handed:
            self.items = [(record, envelope) for record, envelope in self.items if record.offset >= 0]
            for report in self.handed:
                report.settle(False)
            self.handed = []


@dataclass
class _Handed:
    """A worker's report handed over by the relay of this process (``CellEngine.take_reports``)."""

    envelope: TaskEnvelope
    trace_context: Context
    partition: int
    # True once what it caused is written and sent; False if the engine did not take it.
    taken: asyncio.Future[bool]

    def settle(self, taken: bool) -> None:
        if not self.taken.done():
            self.taken.set_result(taken)

    def record(self, topic: str) -> ConsumerRecord[bytes, bytes]:
        """A stand-in for the Kafka record it skipped (a group's items are records): only its partition
        and key are read, and never for a dead letter (a report that would be one is not taken)."""
        return ConsumerRecord(
            topic, self.partition, -1, int(time.time() * 1000), 0, self.envelope.key, b"", None, 0, 0, ()
        )


class _PartitionOwnership(ConsumerRebalanceListener):  # type: ignore[misc]
    """The group's assignment, told to the engine. aiokafka logs and swallows what a callback raises and
    goes on with the assignment, so the engine's side of it must never fail: a partition assigned to the
    process but not taken by its engine would be read by nobody."""

    def __init__(self, engine: CellEngine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.engine.release({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.engine.take({tp.partition for tp in assigned})


class CellEngine:
    def __init__(
        self,
        cell: CellRecord,
        store: RunStore,
        apps: NamespaceApps,
        tasks: TaskProducer,
        sender: OutboxSender,
        consumer: AIOKafkaConsumer,
        task_timeouts: TaskTimeouts | None = None,
        inline: InlineDecisions | None = None,
        inline_seconds: float = 0.05,
        unbilled_workflow_types: frozenset[str] = frozenset(),
    ) -> None:
        self.inline = inline
        self.inline_seconds = inline_seconds
        # Namespaces whose workers answered too late lately: their tasks are sent without waiting, so
        # one tenant's slow (or busy) worker never holds the batches of others.
        self._slow_until: dict[str, float] = {}
        self._late_in_a_row: collections.Counter[str] = collections.Counter()
        # The engine never runs workflow code: workflow tasks go to the namespaces' workers.
        self.machine = ExecutionStateMachine(
            clock=lambda: datetime.now(UTC),
            new_id=lambda: str(uuid.uuid4()),
            task_timeouts=task_timeouts or TaskTimeouts(),
            limits_of=self._limits_of,
            unbilled_workflow_types=unbilled_workflow_types,
        )
        self.cell = cell
        self.store = store
        self.apps = apps
        self.tasks = tasks
        self.sender = sender
        self.consumer = consumer
        self.epochs: dict[int, int] = {}
        self.caches: dict[int, PartitionCache] = {}
        self.lock = asyncio.Lock()
        self.timer_wakeup = asyncio.Event()
        self.stopping = asyncio.Event()
        self.timers = sender.timers
        # Loads of cache misses run concurrently, but few at a time: the database serves small batches
        # of point reads far better than a burst of hundreds.
        self._loading = asyncio.Semaphore(8)
        # Partitions just taken, or rewound: their journalled outboxes are sent (again) before anything else.
        self._unsent: set[int] = set()
        self._forgetting: set[asyncio.Task[None]] = set()
        self._to_forget: list[str] = []  # journal entries of sent batches, forgotten together
        self._forgot_at = time.monotonic()
        self._committing: asyncio.Task[None] | None = None
        # Whether each recent batch failed, for the process's health report.
        self.outcomes: collections.deque[bool] = collections.deque(maxlen=200)
        # Executions whose write the database refused as too large: the batch read again dead-letters
        # their records instead of retrying them for ever.
        self._too_large: set[ExecutionKey] = set()
        # Reports the relay of this process handed over, waiting for the loop (``take_reports``).
        self._handed: list[_Handed] = []
        self._handed_arrived = asyncio.Event()
        self._taking: list[_Handed] = []  # those of the batch in progress
        self._swept_at = time.monotonic()
        self._ended = False  # the loop is over: nothing handed over now would be taken

    def _limits_of(self, namespace: str) -> RunLimits:
        record = self.apps.loaded(namespace)
        return record.quota.run_limits() if record is not None else RunLimits()

    # -- partition ownership -----------------------------------------------------------------------
    async def take(self, partitions: set[int]) -> None:
        """Fence the partitions' earlier owner off and arm their timers, retrying through an outage for as
        long as the group gives them to this process. Their journalled outboxes are sent by the loop."""
        log.info("partitions given; taking them", extra={"partitions": sorted(partitions)})
        async with self.lock:
            for partition in sorted(partitions):
                while not await self._take_one(partition):
                    if self.stopping.is_set():
                        return
            log.info("partitions assigned", extra={"partitions": sorted(partitions), "epochs": self.epochs})
            self.timer_wakeup.set()

    async def _take_one(self, partition: int) -> bool:
        try:
            epoch = await self.store.take_partition(partition)
            armed = await self.store.armed_timers_of(partition)
        except Exception as exc:
            await pause(
                OUTAGES.failed("taking a partition", exc, cap=ENGINE_RETRY_CAP_SECONDS), self.stopping
            )
            return False
        OUTAGES.succeeded("taking a partition", ("mongodb",))
        self.epochs[partition] = epoch
        self.caches[partition] = PartitionCache()
        self.timers.drop_partitions({partition})
        for document in armed:
            self.timers.arm(document)
        self._unsent.add(partition)
        return True

    async def release(self, partitions: set[int]) -> None:
        # Taking the lock waits for the batch in progress to finish and commit.
        async with self.lock:
            try:
                await self._settle_commit()
                await self.store.settle_copies()  # the next owner finds the histories copied
                # Batches of handed reports name no offset a commit covers: their journal entries, sent
                # all, are forgotten now, or the next owner would send their outboxes again.
                await self._forget_now()
            except Exception:
                # The next owner reads from the last commit that went through, and copies what it misses.
                log.warning("letting partitions go before their last writes settled", exc_info=True)
            finally:
                for partition in partitions:
                    self.epochs.pop(partition, None)
                    self.caches.pop(partition, None)
                    _lag.pop(partition, None)
                self._unsent -= partitions
                self.timers.drop_partitions(partitions)
            log.info("partitions revoked", extra={"partitions": sorted(partitions)})

    async def _resend_outboxes(self, partition: int) -> None:
        committed = await self.consumer.committed(TopicPartition(self.cell.topic, partition))
        journal, documents = await self.store.pending_outboxes(partition, committed, self.epochs[partition])
        await self._send_journalled(partition, journal, documents)
        if documents:
            log.info(
                "outbox re-sent after taking a partition",
                extra={"partition": partition, "runs": len(documents)},
            )

    async def _send_fenced_outboxes(self) -> None:
        """Send what writers fenced off journalled in the owned partitions since they were taken (see
        ``RunStore.fenced_outboxes``): looked for every ``FENCED_SWEEP_SECONDS``."""
        self._swept_at = time.monotonic()
        # A partition just taken has its journal read whole first (``_resend_unsent``): its previous
        # owner's entries are not a fenced writer's.
        epochs = {
            partition: epoch for partition, epoch in self.epochs.items() if partition not in self._unsent
        }
        if not epochs:
            return
        journal, documents = await self.store.fenced_outboxes(epochs)
        for partition in sorted({d["partition"] for d in documents}):
            mine = [d for d in documents if d["partition"] == partition]
            await self._send_journalled(partition, [], mine)
        await self.store.forget_journal(journal)
        if journal:
            log.warning(
                "outboxes of writes by a fenced writer sent",
                extra={"entries": len(journal), "runs": len(documents)},
            )

    async def _send_journalled(
        self, partition: int, journal: list[str], documents: list[dict[str, Any]]
    ) -> None:
        if not documents:
            await self.store.forget_journal(journal)
            return
        items = [
            Addressed(d["namespace"], d["workflow_id"], partition, entry)
            for d in documents
            for entry in self.store.outbox_of(d)
        ]
        for document in documents:
            try:
                await self.apps.get(document["namespace"])  # the vhost of the namespace
            except NamespaceUnavailable:
                pass
        await self.sender.send(items)
        # Sent: a crash from here on must not send them yet again (the records of their batch, read
        # again, are duplicates and cause nothing).
        await self.store.forget_journal(journal)

    # -- the loop ----------------------------------------------------------------------------------
    def subscribe(self) -> None:
        self.consumer.subscribe([self.cell.topic], listener=_PartitionOwnership(self))

    async def run(self) -> None:
        timers = asyncio.create_task(self._timer_loop(), name="timers")
        try:
            while not self.stopping.is_set():
                batch = await self._poll()
                if time.monotonic() - self._swept_at > FENCED_SWEEP_SECONDS:
                    async with self.lock:
                        try:
                            await self._send_fenced_outboxes()
                        except Exception:
                            log.warning("sending the outboxes of fenced writers failed", exc_info=True)
                handed, self._handed = self._handed, []
                self._taking = handed
                self._handed_arrived.clear()
                if not batch and not handed and not self._unsent:
                    continue
                async with self.lock:
                    # Records of partitions revoked meanwhile belong to their new owner now.
                    owned = {tp: records for tp, records in batch.items() if tp.partition in self.epochs}
                    for report in handed:
                        if report.partition not in self.epochs:
                            report.settle(False)
                    handed = [report for report in handed if report.partition in self.epochs]
                    if not owned and not handed and not self._unsent:
                        continue
                    done = False
                    try:
                        await self._resend_unsent()
                        if owned or handed:
                            await self.process(owned, handed)
                    except RunTooLarge as exc:
                        # Bad input, not an outage: read again at once, without these executions' records.
                        log.error(
                            "runs too large to write; their records of this batch are dead-lettered",
                            extra={"executions": sorted(exc.executions), "error": str(exc)},
                        )
                        self._too_large |= exc.executions
                        self._rewind(owned, handed)
                        failed = 0.0
                    except Exception as exc:
                        # Nothing of it was committed: it is read again once the store (or Kafka) takes
                        # writes; until then the engine reads nothing further.
                        self._rewind(owned, handed)
                        failed = OUTAGES.failed("an engine batch", exc, cap=ENGINE_RETRY_CAP_SECONDS)
                    else:
                        done, failed = True, 0.0
                        OUTAGES.succeeded("an engine batch", ("kafka", "mongodb"))
                    for report in handed:  # those not declined (or rewound) were written and sent
                        report.settle(done)
                    self.outcomes.append(failed > 0)
                if failed:
                    await pause(failed, self.stopping)
        finally:
            timers.cancel()
            self._ended = True
            handed, self._handed = [*self._taking, *self._handed], []
            for report in handed:  # the relay sends them through Kafka (a no-op for those settled)
                report.settle(False)
            await asyncio.gather(timers, *self._forgetting, return_exceptions=True)
            await self._settle_commit()
            await self.store.settle_copies()
            try:
                await self._forget_now()  # else the next owners send those outboxes again
            except Exception:
                log.warning("forgetting the journal of sent batches failed", exc_info=True)

    async def _settle_commit(self) -> None:
        """Wait for the commit in flight; a failed one only means its records are read again."""
        committing, self._committing = self._committing, None
        if committing is None:
            return
        try:
            await committing
        except Exception:
            log.warning("committing offsets failed; those records will be read again", exc_info=True)

    async def _poll(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The partitions' next records; none at once when the relay hands reports over meanwhile (an
        interrupted fetch loses nothing: aiokafka hands out records only when it returns them)."""
        fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
        if self._handed:
            fetched = await self.consumer.getmany(timeout_ms=0, max_records=MAX_POLL_RECORDS)
            return fetched
        fetching = asyncio.ensure_future(self.consumer.getmany(timeout_ms=100, max_records=MAX_POLL_RECORDS))
        handing = asyncio.ensure_future(self._handed_arrived.wait())
        try:
            await asyncio.wait({fetching, handing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            handing.cancel()
            if not fetching.done():
                fetching.cancel()
                await asyncio.wait({fetching})
        fetched = {} if fetching.cancelled() else fetching.result()
        return fetched

    # -- reports handed over by the relay of this process -----------------------------------------------
    async def take_reports(
        self, envelopes: Sequence[TaskEnvelope], contexts: Sequence[Context]
    ) -> list[bool]:
        """Apply workers' reports without their round trip through Kafka: the relay of this process hands
        over what it received for partitions this engine owns; they join the next batch, after its
        records, and the relay acknowledges a report to RabbitMQ once it is taken, that is once its
        effects are written and their outboxes sent (invariant 1 holds: the report is durable in RabbitMQ
        until its history is in the database). Which were taken; the others (another process's
        partitions, a batch that failed, anything the Kafka path has more to say about: dead letters, a
        namespace moving) the relay sends through Kafka as before, where a report already applied is a
        duplicate."""
        if self.stopping.is_set() or self._ended:
            return [False] * len(envelopes)
        loop = asyncio.get_running_loop()
        offered: list[_Handed | None] = []
        for envelope, trace_context in zip(envelopes, contexts, strict=True):
            partition = partition_of(envelope.key, self.cell.partitions)
            if partition not in self.epochs:
                offered.append(None)
                continue
            report = _Handed(envelope, trace_context, partition, loop.create_future())
            self._handed.append(report)
            offered.append(report)
        if self._handed:
            self._handed_arrived.set()
        return [report is not None and await report.taken for report in offered]

    async def _resend_unsent(self) -> None:
        """Send the journalled outboxes of partitions just taken, and of those whose batch failed after its
        write (reading its records again will not recreate them: they are duplicates now)."""
        if self._unsent & self.epochs.keys():
            # The committed offsets say which outboxes went out: the commit in flight counts too (else
            # the previous batch's outboxes, sent, would be sent again).
            await self._settle_commit()
        for partition in sorted(self._unsent & self.epochs.keys()):
            await self._resend_outboxes(partition)
            self._unsent.discard(partition)
        self._unsent &= self.epochs.keys()

    def _forget_later(self, journal: list[str]) -> None:
        # Forgetting is housekeeping: the next batch need not wait for it, and an entry left behind costs
        # at most a duplicate send when the partition is taken (none once its batch is committed). So the
        # entries of a second's batches go in one statement rather than one each (a database commit
        # fewer per batch).
        self._to_forget.extend(journal)
        if not self._to_forget or time.monotonic() - self._forgot_at < FORGET_EVERY_SECONDS:
            return
        forgetting, self._to_forget = self._to_forget, []
        self._forgot_at = time.monotonic()
        task = asyncio.create_task(self.store.forget_journal(forgetting))
        self._forgetting.add(task)
        task.add_done_callback(self._forgot)

    async def _forget_now(self) -> None:
        forgetting, self._to_forget = self._to_forget, []
        await asyncio.gather(*self._forgetting, return_exceptions=True)
        await self.store.forget_journal(forgetting)

    def _forgot(self, task: asyncio.Task[None]) -> None:
        self._forgetting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("forgetting journal entries failed", exc_info=task.exception())

    async def process(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        handed: Sequence[_Handed] = (),
    ) -> None:
        """Apply a poll's records and the reports handed over meanwhile (``take_reports``)."""
        started = time.perf_counter()
        count = sum(len(records) for records in batch.values())
        batch_sizes.record(count)
        context = (
            extract_kafka_context(next(iter(batch.values()))[0].headers) if batch else handed[0].trace_context
        )
        with tracer.start_as_current_span(
            "perdure.consume", context=context, attributes={"records": count, "handed": len(handed)}
        ):
            rejected: list[DeadLetter] = []
            too_large = set(self._too_large)
            groups = self._group(batch, rejected)
            offsets = {tp.partition: (records[0].offset, records[-1].offset) for tp, records in batch.items()}
            for report in handed:
                key = (report.envelope.namespace, report.envelope.workflow_id)
                if key in too_large:
                    report.settle(False)  # through Kafka, which dead-letters it
                    continue
                group = groups.setdefault(key, Group(key, report.partition))
                group.items.append((report.record(self.cell.topic), report.envelope))
                group.handed.append(report)
                # No commit makes the journal entry of handed reports alone stale (see HANDED_LAST_OFFSET).
                offsets.setdefault(report.partition, (0, HANDED_LAST_OFFSET))
            entries = await self._carry_out(
                groups,
                rejected,
                offsets,
                split=self._inline_enabled() and self._behind(batch),
                rewind=lambda: self._rewind(batch, handed),
            )
            if entries is None:
                return
            await self._settle_commit()
            if batch:
                self._committing = asyncio.create_task(
                    self.consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
                )
            for tp, records in batch.items():
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    _lag[tp.partition] = max(0, highwater - records[-1].offset - 1)
            self._finish(entries)
            tasks_processed.add(count + len(handed) - len(rejected))
            step_latency.record(time.perf_counter() - started)

    async def _carry_out(
        self,
        groups: dict[ExecutionKey, Group],
        rejected: list[DeadLetter],
        offsets: dict[int, tuple[int, int]],
        *,
        split: bool,
        rewind: Callable[[], None],
    ) -> list[RunEntry] | None:
        """Load, apply, write and send what the groups' messages cause; the entries written, or None if
        the write was fenced (``rewind`` was called: the messages are read again). ``split``: write the
        runs that wait for no worker first (the partitions are behind). A group's handed reports are
        left to Kafka (which dead-letters, holds and forwards) if the group has more to it than a run's
        change."""
        with tracer.start_as_current_span("perdure.engine.load", attributes={"executions": len(groups)}):
            await asyncio.gather(*(self._prepare(group, rejected) for group in groups.values()))
        for group in groups.values():
            if group.namespace is None or group.hold or group.forward_to is not None:
                group.decline_handed()
        touched: dict[str, RunEntry] = {}
        extra: list[TaskEnvelope] = []
        replies: list[TenantReply | None] = []
        metered: list[UsageRecord] = []  # what is billed without being written (queries)
        for group in groups.values():
            if group.namespace is None or group.hold:
                continue
            with tracer.start_as_current_span(
                "perdure.workflow_task",
                attributes={"namespace": group.key[0], "workflow_id": group.key[1]},
            ):
                try:
                    self._apply(group, touched, extra, replies, metered)
                except Exception as exc:  # a bug must not stop the partition: park the messages
                    log.exception("applying messages failed", extra={"execution": group.key})
                    group.decline_handed()  # parked once they come through Kafka
                    rejected.extend(self._dead_letter(r, f"engine error: {exc!r}") for r, _ in group.items)
        if split:
            # Behind on its partitions: the runs that wait for no worker are written (and their
            # outboxes sent) while the workers answer the others' tasks, written next with what came.
            asking = {run_id: e for run_id, e in touched.items() if e.state.workflow_task is not None}
            # A run a reset terminated is written with the run that replaces it (which asks for a
            # task), after it: never terminated, its outbox sent, before its new run exists.
            replaced = {
                run_id: e
                for run_id, e in touched.items()
                if run_id not in asking and e.state.reset_run_id in asking
            }
            sent: set[str] = set()
            pending = await self._dispatch_inline(asking, sent)
            first = [
                e
                for e in touched.values()
                if e.dirty and e.state.run_id not in asking and e.state.run_id not in replaced
            ]
            journal = await self._write_and_send(rewind, first, offsets, frozenset())
            if journal is None:
                return None
            await self._take_answers(pending, time.monotonic() + self.inline_seconds)
            rest = [e for e in [*replaced.values(), *asking.values()] if e.dirty]
            later = await self._write_and_send(rewind, rest, offsets, frozenset(sent))
            if later is None:
                return None
            journal += later
        else:
            with tracer.start_as_current_span("perdure.engine.inline_decisions"):
                sent_inline = await self._decide_inline(touched)
            entries = [e for e in touched.values() if e.dirty]
            written = await self._write_and_send(rewind, entries, offsets, sent_inline)
            if written is None:
                return None
            journal = written
        entries = [e for e in touched.values() if e.dirty]
        await self._hold_and_forward(groups.values())
        await self.sender.usage.send_all(metered)
        await self.tasks.send_all(extra)
        await self.sender.reply(replies)
        if rejected:
            await self._send_dead_letters(rejected)
        # Once sent, an outbox needs no journal: a crash from here on leaves nothing unsent.
        self._forget_later(journal)
        return entries

    @staticmethod
    def _finish(entries: list[RunEntry]) -> None:
        for entry in entries:
            entry.reset_changes()
            if not entry.state.is_open:
                entry.history = None  # a query of a closed run reads it again

    def _group(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], rejected: list[DeadLetter]
    ) -> dict[ExecutionKey, Group]:
        """The batch's records by execution, in partition order (undecodable ones dead-lettered). A
        reset past the batch's share (``MAX_RESETS_PER_BATCH``, one per execution) ends its partition's
        part of the batch: it and what follows it are read by the next batch."""
        groups: dict[ExecutionKey, Group] = {}
        resetting: set[ExecutionKey] = set()
        too_large, self._too_large = self._too_large, set()
        for tp, records in list(batch.items()):
            for index, record in enumerate(records):
                try:
                    envelope = decode_envelope(record.value, record.key)
                except UndecodableMessage as exc:
                    rejected.append(self._dead_letter(record, str(exc)))
                    continue
                key = (envelope.namespace, envelope.workflow_id)
                if key in too_large:
                    reason = "its run's document would pass the database's document size limit"
                    rejected.append(self._dead_letter(record, reason))
                    continue
                if isinstance(envelope.message, m.ResetWorkflow):
                    if key in resetting or len(resetting) >= MAX_RESETS_PER_BATCH:
                        self._defer(batch, tp, index)
                        break
                    resetting.add(key)
                groups.setdefault(key, Group(key, tp.partition)).items.append((record, envelope))
        return groups

    def _defer(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], tp: TopicPartition, index: int
    ) -> None:
        """Leave the partition's records from ``index`` on to the next batch (read again from there)."""
        records = batch[tp]
        self.consumer.seek(tp, records[index].offset)
        if index:
            batch[tp] = records[:index]
        else:
            del batch[tp]

    async def _hold_and_forward(self, groups: Iterable[Group]) -> None:
        """Keep the records of namespaces being moved away (in the batch's partitions, before its
        commit); send those of namespaces that moved to their cell's topic."""
        held: list[dict[str, Any]] = []
        forwarded: dict[str, list[TaskEnvelope]] = collections.defaultdict(list)
        for group in groups:
            if group.hold:
                held.extend(
                    {
                        "_id": f"{record.partition}:{record.offset}",
                        "namespace": envelope.namespace,
                        "partition": record.partition,
                        "offset": record.offset,
                        "envelope": envelope.encode(),
                    }
                    for record, envelope in group.items
                )
            elif group.forward_to is not None:
                forwarded[group.forward_to].extend(envelope for _, envelope in group.items)
        await self.store.hold(held)
        for cell, envelopes in forwarded.items():
            log.info("records forwarded to the cell their namespace moved to", extra={"cell": cell})
            await TaskProducer(self.tasks.producer, cell).send_all(envelopes)

    async def namespaces_changed(self, changes: NamespaceChanges) -> None:
        """A namespace left (moved away, or being moved): its runs leave the caches and its timers are
        disarmed (a move holds what fires). One arrived (moved here): its runs' timers are armed."""
        if not changes.arrived and not changes.departed:
            return
        async with self.lock:
            for cache in self.caches.values():
                cache.forget_namespaces(changes.departed)
            self.timers.drop_namespaces(changes.departed)
            for namespace in sorted(changes.arrived):
                for document in await self.store.armed_timers_of(sorted(self.epochs), namespace):
                    self.timers.arm(document)
        self.timer_wakeup.set()

    async def _write_and_send(
        self,
        rewind: Callable[[], None],
        entries: list[RunEntry],
        offsets: dict[int, tuple[int, int]],
        sent_tasks: frozenset[str],
    ) -> list[str] | None:
        """Write ``entries`` and send their outboxes (but the tasks already sent); the journal entries
        written, or None if the batch was fenced (``rewind`` was called: it is read again)."""
        try:
            with tracer.start_as_current_span("perdure.store.write", attributes={"runs": len(entries)}):
                journal: list[str] = await self.store.write(entries, self.epochs, offsets)
        except FencedError as exc:
            # Another process took these partitions (the rebalance revokes them here soon), or a write
            # of this batch half-succeeded: either way the records are read again, and applying them
            # again is harmless (duplicates are recognised by the state machine).
            log.error("fenced: a run changed under this writer", extra={"error": str(exc)})
            rewind()
            return None
        items = [
            Addressed(e.state.namespace, e.state.workflow_id, e.partition, item)
            for e in entries
            for item in e.new_outbox
        ]
        with tracer.start_as_current_span("perdure.outbox.send", attributes={"items": len(items)}):
            await self.sender.send(items, sent_tasks=sent_tasks)
        return journal

    def _behind(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> bool:
        """Whether records wait behind this batch in any of its partitions."""
        for tp, records in batch.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None and highwater > records[-1].offset + 1:
                return True
        return False

    def _inline_enabled(self) -> bool:
        return self.inline is not None and self.inline_seconds > 0

    async def _decide_inline(self, touched: dict[str, RunEntry]) -> frozenset[str]:
        """Send the batch's workflow tasks now and record the commands that come back within the wait,
        in this batch's write (see ``inline_decisions``); the ids of the tasks sent."""
        if not self._inline_enabled():
            return frozenset()
        deadline = time.monotonic() + self.inline_seconds
        sent: set[str] = set()
        while time.monotonic() < deadline:
            pending = await self._dispatch_inline(touched, sent)
            if not pending:
                break
            await self._take_answers(pending, deadline)
        return frozenset(sent)

    async def _dispatch_inline(self, touched: dict[str, RunEntry], sent: set[str]) -> dict[str, _Asked]:
        """Send the current workflow tasks of ``touched`` not yet in ``sent`` (which they join), with
        this process's reply queue; what was asked, by task id."""
        assert self.inline is not None
        pending: dict[str, _Asked] = {}
        for entry in touched.values():
            current = entry.state.workflow_task
            for item in entry.new_outbox:
                if (
                    isinstance(item, o.DispatchWorkflowTask)
                    and current is not None
                    and item.task_id == current.task_id
                    and item.task_id not in sent
                    and self._slow_until.get(item.namespace, 0.0) <= time.monotonic()
                ):
                    vhost = self.apps.vhost_of(item.namespace)
                    pending[item.task_id] = _Asked(
                        entry, item, vhost, self.inline.expect(vhost, item.task_id)
                    )
        sent.update(pending)

        async def dispatch(asked: _Asked) -> None:
            assert self.inline is not None
            reply_to = await self.inline.reply_queue(asked.vhost)
            await self.sender.send_workflow_task(asked.item, reply_to=reply_to)

        await asyncio.gather(*(dispatch(asked) for asked in pending.values()))
        return pending

    async def _take_answers(self, pending: dict[str, _Asked], deadline: float) -> None:
        """Record the answers that come before ``deadline``; a namespace none of whose workers answered
        in time is not waited for again for a while."""
        assert self.inline is not None
        answered = await self.inline.wait(
            {task_id: (asked.vhost, asked.future) for task_id, asked in pending.items()}, deadline
        )
        answering = set()
        for task_id, reply in answered.items():
            asked = pending[task_id]
            self._absorb(asked.entry, self.machine.handle(asked.entry.state, reply))
            self._late_in_a_row.pop(asked.item.namespace, None)
            answering.add(asked.item.namespace)
        late = {pending[task_id].item.namespace for task_id in pending.keys() - answered.keys()}
        for namespace in late - answering:
            # The longer the more often it was late (a worker that was only starting is asked again soon).
            self._late_in_a_row[namespace] += 1
            pause = min(SLOW_WORKER_SECONDS, 0.5 * 2 ** (self._late_in_a_row[namespace] - 1))
            self._slow_until[namespace] = time.monotonic() + pause

    # -- loading -----------------------------------------------------------------------------------
    async def _prepare(self, group: Group, rejected: list[DeadLetter]) -> None:
        async with self._loading:
            await self._load(group, rejected)

    async def _load(self, group: Group, rejected: list[DeadLetter]) -> None:
        namespace = group.key[0]
        try:
            group.namespace = await self.apps.get(namespace)
        except NamespaceMoved as moved:
            group.forward_to = moved.cell
            return
        except NamespaceUnavailable as exc:
            # Handed reports are left to Kafka (``decline_handed``): only records are dead-lettered here.
            rejected.extend(self._dead_letter(r, str(exc)) for r, _ in group.items if r.offset >= 0)
            return
        if group.namespace.record.status == "moving":
            group.hold = True
            return
        cache = self.caches[group.partition]
        latest = cache.latest.get(group.key)
        cache_lookups.add(1, {"result": "hit" if latest else "miss"})
        if latest is None:
            document = await self.store.latest_run(*group.key)
            if document is not None:
                latest = await self._entry(document)
                cache.put(group.key, latest, latest=True)
        # With a reset in the batch, the pointer is written after the runs (``RunStore.write``): a start
        # of a workflow with no pointer may have made its run before a crash.
        resetting = any(isinstance(envelope.message, m.ResetWorkflow) for _, envelope in group.items)
        for _, envelope in group.items:
            run_id = envelope.run_id
            if isinstance(envelope.message, m.StartWorkflow) and run_id is None:
                if latest is None and not resetting:
                    continue  # no run of this execution exists at all (the pointer is written first)
                run_id = fresh_run_id(namespace, envelope.workflow_id, envelope.message.request_id)
            if run_id is None or run_id in cache.by_run:
                continue
            document = await self.store.run(run_id)
            # A run id names a run of this execution only: one of another namespace or workflow (sent by
            # a hostile client or worker, whose namespace is its vhost) is no run at all here.
            if document is not None and (document["namespace"], document["workflow_id"]) == group.key:
                cache.put(group.key, await self._entry(document), latest=False)
        for _, envelope in group.items:
            if isinstance(envelope.message, m.ResetWorkflow):
                await self._load_for_reset(group, envelope.run_id, envelope.message)
        # A query of a closed run goes to a worker with the whole history; an update sent again to a
        # closed run is answered from it.
        for _, envelope in group.items:
            if isinstance(envelope.message, m.QueryWorkflow | m.UpdateWorkflow):
                entry = self._run_of(cache, group.key, envelope.run_id)
                if entry is not None and entry.history is None:
                    entry.history = await self.store.read_history(entry.state.run_id)

    async def _load_for_reset(self, group: Group, run_id: str | None, reset: m.ResetWorkflow) -> None:
        """What a reset needs: the run it made if it was done before (and the run that one was reset
        from), else the whole history of the run to reset."""
        cache = self.caches[group.partition]
        made = reset_run_id(*group.key, reset.request_id)
        for wanted in (made, None):
            if wanted is None:
                entry = cache.by_run.get(made)
                wanted = entry.state.reset_from_run_id if entry is not None else None
            if wanted is None or wanted in cache.by_run:
                continue
            document = await self.store.run(wanted)
            if document is not None and (document["namespace"], document["workflow_id"]) == group.key:
                cache.put(group.key, await self._entry(document), latest=False)
        target = self._run_of(cache, group.key, run_id)
        if target is not None and target.history is None:
            target.history = await self.store.read_history(target.state.run_id)

    async def _entry(self, document: dict[str, Any]) -> RunEntry:
        await self.store.flush_tail(document)
        entry = self.store.entry_of(document)
        if entry.state.is_open:
            entry.history = await self.store.read_history(entry.state.run_id, document)
        return entry

    def _rewind(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        handed: Sequence[_Handed] = (),
    ) -> None:
        """Read the batch again from its first record, from the database rather than the cache; its handed
        reports go through Kafka (duplicates if this batch's write landed)."""
        for tp, records in batch.items():
            self.consumer.seek(tp, records[0].offset)
        for report in handed:
            report.settle(False)
        for partition in {tp.partition for tp in batch} | {report.partition for report in handed}:
            self._unsent.add(partition)
            if partition in self.caches:
                self.caches[partition] = PartitionCache()

    # -- applying ----------------------------------------------------------------------------------
    def _apply(
        self,
        group: Group,
        touched: dict[str, RunEntry],
        extra: list[TaskEnvelope],
        replies: list[TenantReply | None],
        metered: list[UsageRecord],
    ) -> None:
        assert group.namespace is not None
        machine = self.machine
        cache = self.caches[group.partition]
        for _, envelope in group.items:
            message = envelope.message
            if isinstance(message, m.StartWorkflow):
                entry = self._start(group, envelope, message, extra, replies)
                if entry is not None:
                    touched[entry.state.run_id] = entry
                continue
            entry = self._run_of(cache, group.key, envelope.run_id)
            if isinstance(message, m.QueryWorkflow):
                if entry is None:
                    which = envelope.run_id or repr(envelope.workflow_id)
                    replies.append(
                        TenantReply.of(envelope, IngressReply.failed("not_found", f"no {which} to query"))
                    )
                    continue
                # Answered by a worker, on the client's reply queue; billed once it reached a run.
                pending = m.PendingQuery(
                    request_id=message.request_id,
                    query_name=message.query_name,
                    input=message.input,
                    reply_to=envelope.reply_to,
                    correlation_id=envelope.correlation_id,
                )
                self._absorb(entry, machine.query(entry.state, pending))
                touched[entry.state.run_id] = entry
                metered.append(query_usage(group.key[0], message.request_id, datetime.now(UTC)))
                continue
            if isinstance(message, m.UpdateWorkflow):
                waiter = _update_waiter(envelope, message)
                if entry is None:
                    which = envelope.run_id or repr(envelope.workflow_id)
                    replies.append(
                        TenantReply.of(envelope, IngressReply.failed("not_found", f"no {which} to update"))
                    )
                    continue
                # Its answers leave through the run's outbox, after the write that records what they say.
                if self._absorb(entry, machine.update(entry.state, message, waiter, entry.history or [])):
                    touched[entry.state.run_id] = entry
                continue
            if isinstance(message, m.ResetWorkflow):
                replies.append(TenantReply.of(envelope, self._reset(group, envelope, message, touched)))
                continue
            if entry is None:
                log.warning(
                    "message for an unknown run", extra={"execution": group.key, "kind": message.kind}
                )
                continue
            transition = machine.handle(entry.state, message)
            if self._absorb(entry, transition):
                touched[entry.state.run_id] = entry

    def _reset(
        self, group: Group, envelope: TaskEnvelope, reset: m.ResetWorkflow, touched: dict[str, RunEntry]
    ) -> IngressReply:
        """Reset a run of the execution into a new run (docs/reset.md), written with this batch: the new
        run (its history batches, then its document), then the workflow's pointer to it, then the run
        reset from, terminated. A crash between those writes leaves the batch uncommitted: the reset is
        read again, finds the run it made and finishes the rest (``_finish_reset``)."""
        cache = self.caches[group.partition]
        namespace, workflow_id = group.key
        new_run_id = reset_run_id(namespace, workflow_id, reset.request_id)
        made = cache.by_run.get(new_run_id)
        if made is not None:
            self._finish_reset(group, made, reset, touched)
            resets.add(1, {"outcome": "repeated"})
            return IngressReply(ok=True, run_id=new_run_id)
        target = self._run_of(cache, group.key, envelope.run_id)
        if target is None:
            which = f"run {envelope.run_id} of workflow" if envelope.run_id else "workflow"
            return IngressReply.failed("not_found", f"no {which} {workflow_id!r} to reset")
        latest = cache.latest.get(group.key)
        refusal = self._open_run_in_the_way(latest, target)
        if refusal is not None:
            resets.add(1, {"outcome": "refused"})
            return IngressReply.failed("reset_refused", refusal)
        try:
            transitions = self.machine.reset(target.state, target.history or [], reset, new_run_id)
        except ResetRefused as exc:
            log.info("reset refused", extra={"execution": group.key, "reason": str(exc)})
            resets.add(1, {"outcome": "refused"})
            return IngressReply.failed("reset_refused", str(exc))
        entry = RunEntry(
            state=transitions.new_run.state,
            partition=group.partition,
            persisted_next_event_id=1,
            pointer_after=True,
            replaces=latest.state.run_id if latest is not None else None,
        )
        self._absorb(entry, transitions.new_run)
        # Measured before anything is written: a run document the database would refuse must not be
        # found half-way through the batch's writes (its history goes in bounded batches; what is left
        # is its state: pending activities' inputs, unanswered updates, ...).
        size = document_size(entry)
        if size > MAX_DOCUMENT_BYTES:
            resets.add(1, {"outcome": "refused"})
            return IngressReply.failed(
                "reset_refused",
                f"the new run's document could need {size} bytes (its state, pending work and the last "
                f"of its history), past the {MAX_DOCUMENT_BYTES} the database stores in one: reset to "
                "another point",
            )
        cache.put(group.key, entry, latest=True)
        self._absorb(target, transitions.old_run)
        # In this order: the old run's outbox (its children's cancels, ...) goes out before the new one's.
        touched[target.state.run_id] = target
        touched[new_run_id] = entry
        resets.add(1, {"outcome": "reset"})
        log.info(
            "run reset",
            extra={
                "execution": group.key,
                "run_id": target.state.run_id,
                "new_run_id": new_run_id,
                "point": transitions.point,
            },
        )
        return IngressReply(ok=True, run_id=new_run_id)

    @staticmethod
    def _open_run_in_the_way(latest: RunEntry | None, target: RunEntry) -> str | None:
        """Why a reset of ``target`` would leave the workflow id two open runs, if it would: its open run
        is another (the rule of ``decide_start``: a run that continued as new counts as open until its
        next run, whose start is on its way, starts)."""
        open_run = open_run_of(latest.state) if latest is not None else None
        if latest is None or open_run is None or open_run == target.state.run_id:
            return None
        workflow_id = target.state.workflow_id
        if open_run != latest.state.run_id:
            return (
                f"run {latest.state.run_id} of workflow {workflow_id!r} continued as new into run "
                f"{open_run}, which is starting: reset run {open_run} once it started, or terminate it"
            )
        return (
            f"run {target.state.run_id} is not the current run of workflow {workflow_id!r}, and the "
            f"current one ({open_run}) is open: reset that one, or terminate it first"
        )

    def _finish_reset(
        self, group: Group, made: RunEntry, reset: m.ResetWorkflow, touched: dict[str, RunEntry]
    ) -> None:
        """The reset read again (a client's retry, or after a crash) found the run it made: finish what a
        crash may have cut short. The write order (new run, pointer, old run) makes the cases:

        - the run reset from still open: only a crash stopped its termination (a reset terminates it in
          the write that made the new run, and a closed run never reopens);
        - the new run open: nothing replaced it as the workflow's latest (its id has one open run), so a
          pointer naming another run was not moved yet, and the run reset from gains its pointer;
        - else the reset was finished long ago: a closed run reset again since points to that later
          reset, which this one must not undo."""
        cache = self.caches[group.partition]
        old = cache.by_run.get(made.state.reset_from_run_id or "")
        point = made.state.reset_point
        latest = cache.latest.get(group.key)
        if made.state.is_open and latest is not made:
            made.repoint = True
            made.replaces = latest.state.run_id if latest is not None else None
            cache.put(group.key, made, latest=True)
            touched[made.state.run_id] = made
        if old is None or point is None or old.state.reset_run_id == made.state.run_id:
            return
        if old.state.is_open or made.state.is_open:
            transition = self.machine.reset_into(old.state, made.state.run_id, point, reset.reason)
            if self._absorb(old, transition):
                touched.pop(made.state.run_id, None)
                touched[old.state.run_id] = old
                if made.dirty:
                    touched[made.state.run_id] = made  # the old run's outbox first

    @staticmethod
    def _run_of(cache: PartitionCache, key: ExecutionKey, run_id: str | None) -> RunEntry | None:
        """The run a message names (or the execution's latest), if it is a run of ``key``."""
        entry = cache.by_run.get(run_id) if run_id else cache.latest.get(key)
        if entry is not None and (entry.state.namespace, entry.state.workflow_id) != key:
            return None
        return entry

    def _start(
        self,
        group: Group,
        envelope: TaskEnvelope,
        message: m.StartWorkflow,
        extra: list[TaskEnvelope],
        replies: list[TenantReply | None],
    ) -> RunEntry | None:
        assert group.namespace is not None
        cache = self.caches[group.partition]
        namespace = group.key[0]
        run_id = envelope.run_id or fresh_run_id(namespace, message.workflow_id, message.request_id)
        latest = cache.latest.get(group.key)
        decision = decide_start(
            latest.state if latest is not None else None,
            message,
            envelope.id_reuse_policy,
            run_id=run_id,
            applied_before=run_id in cache.by_run,
        )
        is_child = message.parent is not None and message.continued_from_run_id is None
        match decision:
            case AnswerWithRun():
                replies.append(TenantReply.of(envelope, IngressReply(ok=True, run_id=decision.run_id)))
                answered = cache.by_run.get(decision.run_id)
                if answered is not None and answered.state.is_open and latest is not answered:
                    # Open, yet the pointer names another run: a crash stopped a batch that also reset
                    # the workflow between its runs and the pointer (``RunStore.write``). Moved now.
                    answered.repoint = True
                    answered.replaces = latest.state.run_id if latest is not None else None
                    cache.put(group.key, answered, latest=True)
                    return answered
                return None  # the same start again: the run exists
            case SignalRun():
                replies.append(TenantReply.of(envelope, IngressReply(ok=True, run_id=decision.run_id)))
                if latest is not None and latest.state.run_id == decision.run_id:
                    signalled = self._absorb(latest, self.machine.handle(latest.state, decision.signal))
                    return latest if signalled else None
                # The next run of a chain that continued as new: its start is in the partition already
                # (the outbox that carries it was sent before this batch's extra records).
                extra.append(
                    TaskEnvelope(
                        namespace=namespace,
                        workflow_id=message.workflow_id,
                        run_id=decision.run_id,
                        message=decision.signal,
                    )
                )
                return None
            case RefuseStart():
                log.info("start refused", extra={"execution": group.key, "reason": decision.reason})
                refusal = IngressError(type="already_started", message=decision.reason)
                replies.append(
                    TenantReply.of(envelope, IngressReply(ok=False, error=refusal, run_id=decision.run_id))
                )
                if is_child and message.parent is not None:
                    extra.append(
                        self._to_parent(
                            message,
                            m.ChildStartFailed(
                                run_id=message.parent.run_id,
                                initiated_event_id=message.parent.initiated_event_id,
                                cause=decision.reason,
                            ),
                        )
                    )
                return None
        transition = self.machine.start(namespace, message, run_id=run_id)
        entry = RunEntry(state=transition.state, partition=group.partition, persisted_next_event_id=1)
        entry.replaces = latest.state.run_id if latest is not None else None
        self._absorb(entry, transition)
        cache.put(group.key, entry, latest=True)
        replies.append(TenantReply.of(envelope, IngressReply(ok=True, run_id=run_id)))
        if is_child and message.parent is not None:
            extra.append(
                self._to_parent(
                    message,
                    m.ChildStarted(
                        run_id=message.parent.run_id,
                        initiated_event_id=message.parent.initiated_event_id,
                        child_run_id=run_id,
                    ),
                )
            )
        return entry

    @staticmethod
    def _to_parent(message: m.StartWorkflow, notice: m.ChildStarted | m.ChildStartFailed) -> TaskEnvelope:
        assert message.parent is not None
        parent = message.parent
        return TaskEnvelope(
            namespace=parent.namespace, workflow_id=parent.workflow_id, run_id=parent.run_id, message=notice
        )

    @staticmethod
    def _absorb(entry: RunEntry, transition: Transition) -> bool:
        if transition.ignored is not None:
            return False
        for warning in transition.warnings:
            log.warning(
                "a run nears its history limit",
                extra={"namespace": entry.state.namespace, "run_id": entry.state.run_id, "warning": warning},
            )
        entry.state = transition.state
        entry.new_events.extend(transition.events)
        entry.new_outbox.extend(transition.outbox)
        entry.state_changed = True
        if entry.history is not None:
            entry.history.extend(transition.events)
        elif entry.persisted_next_event_id == 1:
            entry.history = list(entry.new_events)  # a new run: all it has is in this poll
        return True

    async def history_of(self, run_id: str) -> list[h.HistoryEvent]:
        """The run's history, for a workflow task: from the cache while the run is open, else read."""
        for cache in self.caches.values():
            entry = cache.by_run.get(run_id)
            if entry is not None and entry.history is not None:
                return entry.history
        return await self.store.read_history(run_id)

    # -- dead letters ------------------------------------------------------------------------------
    def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> DeadLetter:
        dead_letters.add(1)
        letter = DeadLetter.of(record, reason)
        log.warning(
            "dead-lettered",
            extra={"offset": record.offset, "partition": record.partition, "reason": letter.reason},
        )
        return letter

    async def _send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        producer = self.tasks.producer
        futures = [
            await producer.send(
                self.cell.dlq_topic, letter.model_dump_json().encode(), key=letter.id.encode()
            )
            for letter in letters
        ]
        await asyncio.gather(*futures)

    # -- timers ------------------------------------------------------------------------------------
    def timer_armed(self) -> None:
        self.timer_wakeup.set()

    async def _timer_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._fire_due_timers()
            except Exception as exc:
                await pause(OUTAGES.failed("firing timers", exc, cap=ENGINE_RETRY_CAP_SECONDS), self.stopping)

    async def _fire_due_timers(self) -> None:
        due = self.timers.pop_due(datetime.now(UTC))
        if due:
            with tracer.start_as_current_span("perdure.timers.fire", attributes={"timers": len(due)}):
                envelopes = []
                for document in due:
                    notice = m.TimerFiredNotice.model_validate(document["notice"])
                    envelopes.append(
                        TaskEnvelope(
                            namespace=document["namespace"],
                            workflow_id=document["workflow_id"],
                            run_id=notice.run_id,
                            message=notice,
                        )
                    )
                try:
                    await self.tasks.send_all(envelopes)
                except Exception:
                    for document in due:
                        self.timers.arm(document)  # fire them again on the next round
                    raise
            return
        upcoming = self.timers.next_fire_at()
        delay = 1.0
        if upcoming is not None:
            delay = min(delay, max(0.0, (upcoming - datetime.now(UTC)).total_seconds()))
        self.timer_wakeup.clear()
        try:
            await asyncio.wait_for(self.timer_wakeup.wait(), delay)
        except TimeoutError:
            pass


def _update_waiter(envelope: TaskEnvelope, update: m.UpdateWorkflow) -> m.UpdateWaiter | None:
    """Who waits for the update's answer: the sender's reply queue, if it gave one a broker can route to
    (a name longer than a routing key may be has nobody behind it)."""
    if not envelope.reply_to or len(envelope.reply_to) > 255:
        return None
    correlation = envelope.correlation_id
    return m.UpdateWaiter(
        reply_to=envelope.reply_to,
        correlation_id=correlation if correlation is None or len(correlation) <= 255 else None,
        wait_for=update.wait_for,
    )
