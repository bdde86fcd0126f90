"""Activity timeouts and heartbeats, and the data converter's limit and codec hook."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from perdure.platform.core import history as h
from perdure.tenants import DataConverter, Payload, PayloadTooLargeError, WorkflowFailureError
from perdure.tenants.testing import LocalEnvironment

from . import workflows as w


@pytest.fixture
async def env() -> AsyncIterator[LocalEnvironment]:
    w.calls.clear()
    async with LocalEnvironment(w.app) as environment:
        yield environment


async def test_heartbeat_details_carry_over_to_the_retry(env: LocalEnvironment) -> None:
    result = await env.execute_workflow(w.Heartbeats.run, "upload", id="hb")
    assert result == "upload: resumed from 2 on attempt 2"
    assert w.calls["upload"] == 2


async def test_start_to_close_timeout_retries_a_hung_attempt(env: LocalEnvironment) -> None:
    assert await env.execute_workflow(w.StartToClose.run, "hang", id="s2c") == "hang-attempt-2"
    events = h.history_from_json(env.history("s2c"))
    retry = next(e for e in events if isinstance(e, h.ActivityTaskRetryScheduled))
    assert retry.failure.timeout_type == "start_to_close"


async def test_schedule_to_close_timeout_is_final(env: LocalEnvironment) -> None:
    assert (
        await env.execute_workflow(w.ScheduleToClose.run, "s", id="sched")
        == "TimedOutError:schedule_to_close"
    )


def test_an_oversized_payload_is_refused_with_its_size() -> None:
    converter = DataConverter(max_payload_bytes=1000)
    with pytest.raises(PayloadTooLargeError) as error:
        converter.to_payloads(["y" * 2000], "workflow input")
    assert error.value.size > 1000 and error.value.limit == 1000
    assert "workflow input is" in str(error.value) and "over the limit of 1000 bytes" in str(error.value)


async def test_an_oversized_result_fails_the_workflow_clearly() -> None:
    async with LocalEnvironment(w.app, converter=DataConverter(max_payload_bytes=1000)) as env:
        with pytest.raises(WorkflowFailureError) as failure:
            await env.execute_workflow(w.BigResult.run, 5000, id="big")
    assert "over the limit of 1000 bytes" in str(failure.value.cause)


class CompressingCodec:
    """Stands in for a tenant's encryption: payloads leave the tenant transformed."""

    def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload(metadata={"encoding": "binary/zlib"}, data=zlib.compress(p.model_dump_json().encode()))
            for p in payloads
        ]

    def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [Payload.model_validate_json(zlib.decompress(p.data)) for p in payloads]


async def test_a_codec_transforms_every_stored_payload() -> None:
    w.calls.clear()
    async with LocalEnvironment(w.app, converter=DataConverter(codec=CompressingCodec())) as env:
        assert await env.execute_workflow(w.ThreeSteps.run, "secret", id="codec") == [
            "secret-1-done",
            "secret-2-done",
            "secret-3-done",
        ]
        events = h.history_from_json(env.history("codec"))
    stored = [p for e in events for p in getattr(e, "input", [])] + [
        e.result for e in events if isinstance(e, h.ActivityTaskCompleted) and e.result
    ]
    assert stored and all(p.metadata["encoding"] == "binary/zlib" for p in stored)
    assert all(b"secret" not in p.data for p in stored)


@dataclass
class Point:
    x: int
    at: datetime


def test_dataclasses_and_models_round_trip() -> None:
    converter = DataConverter()
    value = Point(3, datetime(2026, 11, 28, tzinfo=UTC))
    payload = converter.to_payload(value)
    assert converter.from_payload(payload, Point) == value
    assert converter.from_payload(converter.to_payload(w.Order(order_id="a", amount=1)), w.Order).amount == 1
    assert converter.from_payload(converter.to_payload(None)) is None
