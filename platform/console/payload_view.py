"""Payloads as the console shows them: pretty JSON when the default converter can read them, and what
they are when it cannot ("encoded (ENCODING, N bytes)"): a tenant's codec may have encrypted them, and
the platform never holds the tenant's keys. Showing a payload never fails a page.

What comes out is plain text; the templates escape it like any other tenant data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from perdure.platform.core.payloads import JSON_ENCODING, NULL_ENCODING, Payload

# Past this a shown payload is cut: a page holds many of them, each up to the namespace's limit.
MAX_SHOWN_CHARS = 16 * 1024


@dataclass(frozen=True)
class ShownPayload:
    text: str  # pretty JSON, or "encoded (ENCODING, N bytes)"
    decoded: bool
    encoding: str
    size: int  # bytes of data
    note: str = ""  # why it could not be decoded, or that it was cut


def encoded_label(encoding: str, size: int) -> str:
    return f"encoded ({encoding or 'no encoding'}, {size} bytes)"


def show_payload(payload: Payload | Mapping[str, Any] | None) -> ShownPayload:
    """``payload`` as text: a Payload, or its stored JSON form (data in base64)."""
    if payload is None:
        return ShownPayload(text="null", decoded=True, encoding=NULL_ENCODING, size=0)
    if not isinstance(payload, Payload):
        try:
            payload = Payload.model_validate(payload)
        except ValidationError:
            return ShownPayload(text="unreadable payload", decoded=False, encoding="", size=0)
    encoding = payload.metadata.get("encoding", "")
    size = len(payload.data)
    if encoding == NULL_ENCODING:
        return ShownPayload(text="null", decoded=True, encoding=encoding, size=size)
    if encoding != JSON_ENCODING:
        # The default converter knows json/plain and binary/null only: anything else went through a
        # codec of the tenant's (or was never meant for JSON).
        return ShownPayload(text=encoded_label(encoding, size), decoded=False, encoding=encoding, size=size)
    try:
        value = json.loads(payload.data)
    except ValueError as exc:
        return ShownPayload(
            text=encoded_label(encoding, size),
            decoded=False,
            encoding=encoding,
            size=size,
            note=f"not valid JSON: {exc}",
        )
    text, note = _cut(show_value(value))
    return ShownPayload(text=text, decoded=True, encoding=encoding, size=size, note=note)


def show_payloads(payloads: Iterable[Payload | Mapping[str, Any] | None] | None) -> list[ShownPayload]:
    return [show_payload(p) for p in payloads or []]


def show_value(value: Any) -> str:
    """A decoded value (a query's answer, search attributes) as pretty JSON; never raises."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    except (TypeError, ValueError):  # a circular structure: not from JSON, but shown all the same
        return repr(value)


def _cut(text: str) -> tuple[str, str]:
    if len(text) <= MAX_SHOWN_CHARS:
        return text, ""
    return text[:MAX_SHOWN_CHARS] + " …", f"cut: {len(text) - MAX_SHOWN_CHARS} more characters not shown"
