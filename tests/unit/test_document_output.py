"""Documents shown by the CLI: readable lines by default, the same data as JSON when asked."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from perdure.platform.cli.document_output import document_lines, echo_document

DOCUMENT = {
    "name": "acme",
    "quota": {"actions_per_second": 4.0, "burst": 10},
    "members": [{"email": "ann@acme.example", "role": "owner"}, {"email": "bo@acme.example", "role": "read"}],
    "tags": ["a", "b"],
    "deployment": None,
    "paused": False,
    "created": datetime(2026, 12, 1, tzinfo=UTC),
    "search_attributes": {},
}


def test_a_document_reads_as_indented_lines() -> None:
    assert list(document_lines(DOCUMENT)) == [
        "name: acme",
        "quota:",
        "  actions_per_second: 4",
        "  burst: 10",
        "members:",
        "  - email: ann@acme.example",
        "    role: owner",
        "  - email: bo@acme.example",
        "    role: read",
        "tags:",
        "  - a",
        "  - b",
        "deployment: -",
        "paused: no",
        "created: 2026-12-01T00:00:00+00:00",
        "search_attributes: -",
    ]


def test_json_is_the_document_itself(capsys: pytest.CaptureFixture[str]) -> None:
    echo_document(DOCUMENT, as_json=True)
    shown = json.loads(capsys.readouterr().out)
    assert shown["members"][1]["role"] == "read" and shown["created"] == "2026-12-01 00:00:00+00:00"
