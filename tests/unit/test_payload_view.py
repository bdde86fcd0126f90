"""Payloads as the console shows them: pretty JSON when readable, "encoded (ENCODING, N bytes)" when a
tenant's codec made them unreadable to the platform; never an error."""

from __future__ import annotations

from perdure.platform.console.payload_view import MAX_SHOWN_CHARS, show_payload, show_payloads, show_value
from perdure.platform.core.payloads import Payload, default_converter


def test_json_is_shown_pretty() -> None:
    shown = show_payload(default_converter.to_payload({"order": 7, "items": ["a", "ü"]}))
    assert shown.decoded
    assert shown.text == '{\n  "order": 7,\n  "items": [\n    "a",\n    "ü"\n  ]\n}'
    assert (shown.encoding, shown.note) == ("json/plain", "")


def test_null_and_missing_payloads_are_null() -> None:
    assert show_payload(default_converter.to_payload(None)).text == "null"
    assert show_payload(None).text == "null"


def test_a_payload_encoded_by_an_unknown_codec_is_described_not_decoded() -> None:
    sealed = Payload(metadata={"encoding": "binary/encrypted", "key-id": "k1"}, data=b"\x00\x93secret\xff")
    shown = show_payload(sealed)
    assert not shown.decoded
    assert shown.text == "encoded (binary/encrypted, 9 bytes)"
    assert show_payload(Payload(metadata={}, data=b"abc")).text == "encoded (no encoding, 3 bytes)"


def test_invalid_json_is_described_with_the_reason() -> None:
    shown = show_payload(Payload(metadata={"encoding": "json/plain"}, data=b'{"open": '))
    assert not shown.decoded
    assert shown.text == "encoded (json/plain, 9 bytes)"
    assert shown.note.startswith("not valid JSON: Expecting value: line 1 column 10")


def test_stored_payloads_in_their_json_form_are_read_too() -> None:
    stored = default_converter.to_payload([1, 2]).model_dump(mode="json")
    assert show_payload(stored).text == "[\n  1,\n  2\n]"
    assert show_payload({"metadata": "not a dict", "data": 5}).text == "unreadable payload"
    assert [p.text for p in show_payloads([stored, None])] == ["[\n  1,\n  2\n]", "null"]
    assert show_payloads(None) == []


def test_a_huge_payload_is_cut() -> None:
    shown = show_payload(default_converter.to_payload("x" * (MAX_SHOWN_CHARS * 2)))
    assert shown.decoded and len(shown.text) <= MAX_SHOWN_CHARS + 2
    assert shown.note.startswith("cut: ")


def test_values_are_shown_as_json_whatever_they_hold() -> None:
    assert show_value({"a": [1, None]}) == '{\n  "a": [\n    1,\n    null\n  ]\n}'
    assert show_value({"when": object}).startswith('{\n  "when": "<class')
    looped: list[object] = []
    looped.append(looped)
    assert show_value(looped) == "[[...]]"
