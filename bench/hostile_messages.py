"""Broken and hostile messages for every consumer of the platform, drawn by Hypothesis: random bytes, JSON
cut short, valid messages with a field of the wrong type, a field missing, an unknown field, a wrong
version or kind, huge values, deep nesting. Each consumer's own decoder says which of them it must
refuse; only those are kept, so every message sent must come out in its dead letters, with its reason.

Used by ``bench/chaos.py`` (10,000 and more per consumer) and by the test suite (a few hundred).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from perdure.platform.core.usage import UsageRecord
from perdure.platform.protocol.cell_wire import (
    TaskEnvelope,
    UndecodableMessage,
    decode_envelope,
    execution_key,
)
from perdure.platform.protocol.ingress_wire import request_adapter
from perdure.platform.protocol.worker_wire import WorkerReport

HUGE = 300_000  # characters: past every limit a consumer sets on a field, under the brokers' own


def _payload(text: str) -> dict[str, Any]:
    return {
        "metadata": {"encoding": "json/plain"},
        "data": base64.b64encode(json.dumps(text).encode()).decode(),
    }


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    )


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": [value]}
    return value


def mutations(sample: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Messages near ``sample`` (a valid one) and far from it."""
    encoded = json.dumps(sample).encode()
    keys = sorted(sample)

    def changed(key: str, value: Any) -> bytes:
        return json.dumps({**sample, key: value}).encode()

    nested = [k for k in keys if isinstance(sample[k], dict)]
    strategies: list[st.SearchStrategy[bytes]] = [
        st.binary(max_size=512),
        st.integers(1, len(encoded) - 1).map(lambda n: encoded[:n]),
        st.tuples(st.sampled_from(keys), _json_values()).map(lambda kv: changed(*kv)),
        st.sampled_from(keys).map(lambda k: json.dumps({x: v for x, v in sample.items() if x != k}).encode()),
        st.tuples(st.text(min_size=1, max_size=20).filter(lambda k: k not in sample), _json_values()).map(
            lambda kv: changed(*kv)
        ),
        st.sampled_from(keys).map(lambda k: changed(k, "x" * HUGE)),
        st.integers(-(2**70), 2**70).filter(lambda v: v != 1).map(lambda v: changed("version", v)),
        st.integers(50, 200).map(lambda levels: changed(keys[0], _deep(levels))),
        _json_values().map(lambda v: json.dumps(v).encode()),
    ]
    for key in nested:
        strategies.append(_inner_changes(sample, key))
    return st.one_of(strategies)


def _inner_changes(sample: dict[str, Any], key: str) -> st.SearchStrategy[bytes]:
    """A field of the nested message ``sample[key]`` set to any JSON value."""
    inner: dict[str, Any] = sample[key]

    def changed(field: str, value: Any) -> bytes:
        return json.dumps({**sample, key: {**inner, field: value}}).encode()

    return st.tuples(st.sampled_from(sorted(inner)), _json_values()).map(lambda fv: changed(*fv))


@dataclass(frozen=True)
class Consumer:
    """A consumer to fuzz: a valid message of its own, and its decoder's verdict on a message."""

    name: str
    sample: dict[str, Any]
    refuses: Callable[[bytes], bool]


def _refused_by(decode: Callable[[bytes], object]) -> Callable[[bytes], bool]:
    def refuses(body: bytes) -> bool:
        try:
            decode(body)
        except (ValidationError, UndecodableMessage, ValueError):
            return True
        return False

    return refuses


def consumers(namespace: str, workflow_id: str) -> dict[str, Consumer]:
    """The platform's consumers, each with a valid message for ``namespace``'s run ``workflow_id``."""
    completed = {"kind": "activity_completed", "run_id": "r-1", "scheduled_event_id": 5, "attempt": 1}
    envelope = TaskEnvelope.model_validate(
        {"namespace": namespace, "workflow_id": workflow_id, "run_id": "r-1", "message": completed}
    )
    key = execution_key(namespace, workflow_id)
    start = {
        "kind": "start",
        "request_id": "q-1",
        "workflow_type": "ThreeSteps",
        "workflow_id": workflow_id,
        "input": [_payload("x")],
    }
    report = {"version": 1, "workflow_id": workflow_id, "message": completed}
    usage = {
        "version": 1,
        "id": f"{namespace}/fuzz/1",
        "namespace": namespace,
        "metric": "workflow_started",
        "quantity": 1,
        "at": datetime.now(UTC).isoformat(),
    }
    return {
        "cell topic": Consumer(
            "cell topic", json.loads(envelope.encode()), _refused_by(lambda b: decode_envelope(b, key))
        ),
        "ingress": Consumer("ingress", start, _refused_by(request_adapter.validate_json)),
        "worker reports": Consumer("worker reports", report, _refused_by(WorkerReport.model_validate_json)),
        "metering topic": Consumer("metering topic", usage, _refused_by(UsageRecord.model_validate_json)),
    }


def draw_refused(consumer: Consumer, count: int, seed_value: int = 0) -> list[bytes]:
    """``count`` messages ``consumer`` must refuse (the same ones for the same seed)."""
    found: list[bytes] = []
    strategy = mutations(consumer.sample)

    seen: set[bytes] = set()

    def keep(body: bytes) -> None:
        if len(found) < count and body not in seen and consumer.refuses(body):
            seen.add(body)
            found.append(body)

    for round_seed in range(seed_value, seed_value + 100):
        if len(found) >= count:
            break
        _generate(strategy, (count - len(found)) * 2, round_seed, keep)
    return found


def _generate(
    strategy: st.SearchStrategy[bytes], examples: int, seed_value: int, keep: Callable[[bytes], None]
) -> None:
    @seed(seed_value)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(body: bytes) -> None:
        keep(body)

    collect()
