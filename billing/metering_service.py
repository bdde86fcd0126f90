"""``perdure metering run``: consumes the metering topic and counts every usage record exactly once into
hourly aggregates (see ``usage_store``). Offsets are committed after a batch is applied; whatever is
read again after a crash is recognised. A record that cannot be read goes to the metering dead-letter
topic with the reason, and the consumer goes on."""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from opentelemetry import metrics, trace
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from perdure.billing.usage_store import DEDUP_WINDOW, UsageStore
from perdure.infra.bounded_stop import BoundedStop, stop_on_signals
from perdure.infra.kafka_backoff import with_reconnect_backoff
from perdure.infra.outages import OUTAGES, StoppedWhileWaiting, pause, until_reachable
from perdure.infra.settings import Settings
from perdure.infra.telemetry import Telemetry, configure_telemetry, extract_kafka_context
from perdure.platform.core.usage import UsageRecord, hour_of
from perdure.platform.messaging.task_producer import new_producer, started_producer
from perdure.platform.messaging.usage_producer import ensure_metering_topic, metering_dlq_topic
from perdure.platform.protocol.cell_wire import DeadLetter

log = logging.getLogger("perdure.metering")
tracer = trace.get_tracer("perdure.metering")
meter = metrics.get_meter("perdure.metering")
applied_counter = meter.create_counter("perdure.metering.applied", description="usage records counted")
duplicate_counter = meter.create_counter(
    "perdure.metering.duplicates", description="usage records recognised as copies and skipped"
)
rejected_counter = meter.create_counter("perdure.metering.rejected", description="unreadable usage records")


def metering_group(settings: Settings) -> str:
    return f"{settings.metering_topic}.aggregator"


def usage_store(client: AsyncMongoClient[dict[str, object]], settings: Settings) -> UsageStore:
    return UsageStore(client[settings.metering_database])


class MeteringService:
    def __init__(self, settings: Settings, store: UsageStore, consumer: AIOKafkaConsumer) -> None:
        self.settings = settings
        self.store = store
        self.consumer = consumer
        self.producer = new_producer(settings.endpoints())
        self.stopping = asyncio.Event()
        self._forgot_at: datetime | None = None

    async def run(self) -> None:
        try:
            self.producer = await until_reachable(
                "connecting to Kafka",
                functools.partial(started_producer, self.settings.endpoints()),
                self.stopping,
                ("kafka",),
            )
        except StoppedWhileWaiting:
            return
        try:
            while not self.stopping.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.settings.metering_batch_records
                )
                try:
                    if batch:
                        await self.apply(batch)
                    await self._forget_old_ids()
                except Exception as exc:
                    # Nothing of the batch was committed: it is read again, and what was applied of it
                    # is recognised by the aggregates' offsets.
                    for tp, records in batch.items():
                        self.consumer.seek(tp, records[0].offset)
                    await pause(OUTAGES.failed("applying usage", exc), self.stopping)
                else:
                    if batch:
                        OUTAGES.succeeded("applying usage", ("kafka", "mongodb"))
        finally:
            await self.producer.stop()

    async def apply(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        first = next(iter(batch.values()))[0]
        count = sum(len(records) for records in batch.values())
        with tracer.start_as_current_span(
            "perdure.metering.apply",
            context=extract_kafka_context(first.headers),
            attributes={"records": count},
        ):
            for tp, records in batch.items():
                readable: list[tuple[int, UsageRecord]] = []
                for record in records:
                    try:
                        readable.append((record.offset, UsageRecord.model_validate_json(record.value or b"")))
                    except ValidationError as exc:
                        await self._dead_letter(record, f"unreadable usage record: {exc.errors()[0]['msg']}")
                outcome = await self.store.apply(tp.partition, readable)
                applied_counter.add(outcome.applied)
                duplicate_counter.add(outcome.duplicates)
            await self.consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        rejected_counter.add(1)
        letter = DeadLetter.of(record, reason)
        log.warning("usage record dead-lettered", extra={"offset": record.offset, "reason": letter.reason})
        await self.producer.send_and_wait(
            metering_dlq_topic(self.settings), letter.model_dump_json().encode(), key=letter.id.encode()
        )

    async def _forget_old_ids(self) -> None:
        now = datetime.now(UTC)
        if self._forgot_at is not None and now - self._forgot_at < DEDUP_WINDOW / 40:
            return
        self._forgot_at = now
        await self.store.forget_ids_before(hour_of(now - DEDUP_WINDOW))


async def _started_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The metering group's consumer, joined; nothing is left open if Kafka cannot be reached."""
    consumer = with_reconnect_backoff(
        AIOKafkaConsumer(
            settings.metering_topic,
            **settings.endpoints().kafka(),
            group_id=metering_group(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.engine_session_timeout_ms,
            heartbeat_interval_ms=min(1_000, settings.engine_session_timeout_ms // 3),
        )
    )
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def run_metering(
    settings: Settings, *, stop: asyncio.Event | None = None, telemetry: Telemetry | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set)."""
    owns_telemetry = telemetry is None
    telemetry = telemetry or configure_telemetry(settings, "perdure-metering")
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop, settings.shutdown_seconds, "metering")
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    store = usage_store(client, settings)
    # Started during an outage, it waits it out as a running one does (docs/architecture.md, "Outages").
    try:
        await until_reachable(
            "creating the metering topic",
            functools.partial(ensure_metering_topic, settings),
            stop,
            ("kafka",),
        )
        await until_reachable("creating the usage indexes", store.ensure_indexes, stop, ("mongodb",))
        consumer = await until_reachable(
            "joining the metering group", functools.partial(_started_consumer, settings), stop, ("kafka",)
        )
    except StoppedWhileWaiting:
        log.info("stopped before metering started")
        await client.close()
        if owns_telemetry:
            telemetry.shutdown()
        return
    service = MeteringService(settings, store, consumer)
    OUTAGES.probe_with("kafka", lambda: service.producer.client.fetch_all_metadata())
    # A read that reaches the storage (FerretDB answers a ping without its PostgreSQL).
    OUTAGES.probe_with("mongodb", lambda: store.ids.find_one({}))
    log.info("metering running", extra={"topic": settings.metering_topic})
    running = asyncio.create_task(service.run(), name="metering")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    crashed = False
    try:
        done, _ = await asyncio.wait([running, stopper], return_when=asyncio.FIRST_COMPLETED)
        if running in done and running.exception() is not None:
            crashed = True
            raise running.exception()  # type: ignore[misc]
    finally:
        bounded = BoundedStop("metering", settings.shutdown_seconds)

        async def applying() -> None:
            service.stopping.set()
            await asyncio.gather(running, return_exceptions=True)

        await bounded.step("applying usage", applying, share=0.6)
        await bounded.step("kafka consumer", consumer.stop, share=0.3)
        await bounded.step("database", client.close, share=0.1)
        bounded.report()
        running.cancel()
        stopper.cancel()
        OUTAGES.stop_probing()
        if owns_telemetry:
            telemetry.shutdown()
        log.info("metering stopped", extra={"abandoned": bounded.abandoned})
        if not crashed:  # a crash's own exception says more
            bounded.raise_if_overran()
