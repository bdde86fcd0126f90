"""The data converter: values to payloads and back, with a size limit and a codec hook.

JSON covers primitives, dataclasses and pydantic models; decoding is driven by the type hints of the
workflow or activity signature (pydantic validates into the annotated type). A codec (for example a
tenant's encryption) transforms payloads after encoding and before decoding, so the platform only ever
stores and forwards what the codec produced.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, TypeAdapter

from perdure.platform.core.errors import PerdureError

DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
JSON_ENCODING = "json/plain"
NULL_ENCODING = "binary/null"


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    metadata: dict[str, str]
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data) + sum(len(k) + len(v) for k, v in self.metadata.items())


class PayloadTooLargeError(PerdureError, ValueError):
    """A payload exceeds the namespace's limit; nothing was sent or stored."""

    def __init__(self, size: int, limit: int, what: str = "payload") -> None:
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class PayloadDecodeError(PerdureError, ValueError):
    pass


class PayloadCodec(Protocol):
    """Transforms encoded payloads, e.g. to encrypt them end to end. Must be deterministic to decode."""

    def encode(self, payloads: Sequence[Payload]) -> list[Payload]: ...

    def decode(self, payloads: Sequence[Payload]) -> list[Payload]: ...


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return TypeAdapter(type(value)).dump_python(value, mode="json")
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    # Dates, UUIDs, enums, sets, ...: pydantic knows their JSON form.
    return TypeAdapter(type(value)).dump_python(value, mode="json")


class DataConverter:
    def __init__(
        self, codec: PayloadCodec | None = None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    ) -> None:
        self.codec = codec
        self.max_payload_bytes = max_payload_bytes

    def to_payloads(self, values: Sequence[Any], what: str = "payload") -> list[Payload]:
        payloads = [self._encode_one(v) for v in values]
        if self.codec is not None:
            payloads = self.codec.encode(payloads)
        total = sum(p.size for p in payloads)
        if total > self.max_payload_bytes:
            raise PayloadTooLargeError(total, self.max_payload_bytes, what)
        return payloads

    def to_payload(self, value: Any, what: str = "payload") -> Payload:
        return self.to_payloads([value], what)[0]

    def from_payloads(self, payloads: Sequence[Payload], hints: Sequence[Any] | None = None) -> list[Any]:
        if self.codec is not None:
            payloads = self.codec.decode(payloads)
        hints = list(hints or [])
        return [self._decode_one(p, hints[i] if i < len(hints) else Any) for i, p in enumerate(payloads)]

    def from_payload(self, payload: Payload, hint: Any = Any) -> Any:
        return self.from_payloads([payload], [hint])[0]

    @staticmethod
    def _encode_one(value: Any) -> Payload:
        if value is None:
            return Payload(metadata={"encoding": NULL_ENCODING}, data=b"")
        try:
            data = json.dumps(_to_jsonable(value), separators=(",", ":"), ensure_ascii=False).encode()
        except Exception as exc:
            raise TypeError(f"cannot convert {type(value).__name__} to JSON: {exc}") from exc
        return Payload(metadata={"encoding": JSON_ENCODING}, data=data)

    @staticmethod
    def _decode_one(payload: Payload, hint: Any) -> Any:
        encoding = payload.metadata.get("encoding")
        if encoding == NULL_ENCODING:
            return None
        if encoding != JSON_ENCODING:
            raise PayloadDecodeError(f"unknown payload encoding {encoding!r} (is a codec missing?)")
        try:
            raw = json.loads(payload.data)
        except ValueError as exc:
            raise PayloadDecodeError(f"payload is not valid JSON: {exc}") from exc
        if hint is Any or hint is None:
            return raw
        try:
            return _adapter(hint).validate_python(raw)
        except Exception as exc:
            raise PayloadDecodeError(f"payload does not fit {hint!r}: {exc}") from exc


def _adapter(hint: Any) -> TypeAdapter[Any]:
    """One adapter per type: building one compiles a schema, far dearer than validating with it."""
    try:
        return _adapters[hint]
    except KeyError:
        adapter = _adapters[hint] = TypeAdapter(hint)
        return adapter
    except TypeError:  # an unhashable hint (rare): build it each time
        return TypeAdapter(hint)


_adapters: dict[Any, TypeAdapter[Any]] = {}

default_converter = DataConverter()
