"""Every consumer of the platform, fuzzed on the real services with Hypothesis-drawn broken and hostile
messages (``bench/hostile_messages.py``): each message is refused into the consumer's dead letters with
its reason, none is lost, no consumer stops, and the namespace's work runs right after. The chaos run
(``bench/chaos.py``) sends ten thousand and more per consumer."""

from __future__ import annotations

from pathlib import Path

import aio_pika
from aiokafka import AIOKafkaProducer

from bench.hostile_messages import consumers, draw_refused
from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.platform.cell.dead_letters import read_letters
from perdure.platform.messaging.amqp_dead_letters import REASON_HEADER
from perdure.platform.messaging.usage_producer import metering_dlq_topic
from perdure.platform.protocol.cell_wire import dlq_topic, execution_key, tasks_topic
from perdure.platform.protocol.vhost_layout import (
    INGRESS_DEAD_LETTERS,
    INGRESS_QUEUE,
    WORKER_REPORTS_DEAD_LETTERS,
    WORKER_REPORTS_QUEUE,
)
from perdure.platform.tenancy.model import Quota
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url
from perdure.tenants.client import Client

from .cell_app import ThreeSteps
from .cell_harness import eventually
from .conftest import TenantCellFactory

PER_CONSUMER = 150


async def _three_steps(connection_string: str, ledger: Path, tag: str) -> None:
    async with await Client.connect(connection_string) as client:
        assert await client.execute_workflow(ThreeSteps.run, str(ledger), tag, id=tag) == [
            f"{tag}-1-done",
            f"{tag}-2-done",
            f"{tag}-3-done",
        ]


async def test_every_consumer_refuses_hostile_messages_into_its_dead_letters_and_goes_on(
    make_tenant_cell: TenantCellFactory,
    tmp_path: Path,
    kafka_producer: AIOKafkaProducer,
    rabbitmq_admin: RabbitMQAdmin,
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    cell, namespace = tenants.cell, tenants.a.record.name
    cell_process = cell.processes[0]
    metering = await cell.metering_process().start()
    hostile = {
        name: draw_refused(consumer, PER_CONSUMER, seed_value=17)
        for name, consumer in consumers(namespace, "fuzzed").items()
    }
    assert all(len(messages) == PER_CONSUMER for messages in hostile.values())
    # A worker learns the engine's reply queue from the workflow tasks it is sent: a hostile one can
    # answer anything there too.
    await _three_steps(tenants.connection_string("a"), tmp_path / "ledger", "before")
    [engine_replies] = [
        q for q in await rabbitmq_admin.queues(tenants.a.record.vhost) if q.startswith("engine-")
    ]
    replies = draw_refused(consumers(namespace, "fuzzed")["worker reports"], PER_CONSUMER, seed_value=18)
    replies = [body for body in replies if body not in set(hostile["worker reports"])]
    expected = {INGRESS_DEAD_LETTERS: PER_CONSUMER, WORKER_REPORTS_DEAD_LETTERS: PER_CONSUMER + len(replies)}

    # What a hostile tenant can send: on its namespace's own key.
    tenant = await aio_pika.connect(tenants.connection_string("a"))
    try:
        channel = await tenant.channel(publisher_confirms=True)
        for queue, name in ((INGRESS_QUEUE, "ingress"), (WORKER_REPORTS_QUEUE, "worker reports")):
            for body in hostile[name]:
                await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
        for body in replies:
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=engine_replies)
    finally:
        await tenant.close()
    # What only the platform writes (a bug, a corrupted producer): its Kafka topics.
    for body in hostile["cell topic"]:
        await kafka_producer.send_and_wait(
            tasks_topic(cell.cell), body, key=execution_key(namespace, "fuzzed")
        )
    for body in hostile["metering topic"]:
        await kafka_producer.send_and_wait(cell.settings.metering_topic, body, key=namespace.encode())

    platform = await aio_pika.connect(namespace_amqp_url(cell.settings, cell.cell, tenants.a.record.vhost))
    try:
        channel = await platform.channel()
        for queue in (INGRESS_DEAD_LETTERS, WORKER_REPORTS_DEAD_LETTERS):

            async def parked(queue: str = queue) -> None:
                declared = await channel.declare_queue(queue, durable=True, passive=True)
                assert declared.declaration_result.message_count == expected[queue], queue

            await eventually(parked, timeout=60)
            letters = await channel.declare_queue(queue, durable=True, passive=True)
            reasons = []
            while (letter := await letters.get(no_ack=True, fail=False)) is not None:
                reasons.append(str((letter.headers or {}).get(REASON_HEADER, "")))
            assert len(reasons) == expected[queue] and all(reasons), (queue, reasons[:5])
    finally:
        await platform.close()
    kafka = cell.settings.endpoints(cell.cell).kafka()
    for topic, name in (
        (dlq_topic(cell.cell), "cell topic"),
        (metering_dlq_topic(cell.settings), "metering topic"),
    ):

        async def lettered(topic: str = topic) -> None:
            assert len(await read_letters(kafka, topic)) >= PER_CONSUMER, topic

        await eventually(lettered, timeout=60)
        letters = await read_letters(kafka, topic)
        mine = [letter for letter in letters if letter.value in set(hostile[name])]
        assert len(mine) == PER_CONSUMER and all(letter.reason for letter in mine), topic

    # No consumer stopped: the namespace's work runs, through admission, the engine, the relay.
    await _three_steps(tenants.connection_string("a"), tmp_path / "ledger", "after")
    assert cell_process.proc is not None and cell_process.proc.returncode is None
    # What the refusals quote of the messages is bounded: no line of megabytes in the platform's log.
    assert max(len(line) for line in cell_process.lines("")) < 16_000
    assert metering.proc is not None and metering.proc.returncode is None
