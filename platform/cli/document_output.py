"""How a command shows a document (a namespace, a run's description, a rollout's status): indented
``key: value`` lines for people, or the JSON itself with ``--json`` for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output (JSON)")]


def echo_document(document: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        typer.echo("\n".join(document_lines(document)))


def document_lines(document: Any, indent: int = 0) -> Iterator[str]:
    pad = "  " * indent
    if isinstance(document, dict):
        if not document:
            yield f"{pad}-"
        for key, value in document.items():
            if _nested(value):
                yield f"{pad}{key}:"
                yield from document_lines(value, indent + 1)
            else:
                yield f"{pad}{key}: {_scalar(value)}"
    elif isinstance(document, list):
        for item in document:
            if _nested(item):
                lines = list(document_lines(item, indent + 1))
                # The first line of an item carries its dash, as YAML writes a list of maps.
                yield f"{pad}- {lines[0].lstrip()}" if lines else f"{pad}-"
                yield from lines[1:]
            else:
                yield f"{pad}- {_scalar(item)}"
    else:
        yield f"{pad}{_scalar(document)}"


def _nested(value: Any) -> bool:
    return isinstance(value, dict | list) and bool(value)


def _scalar(value: Any) -> str:
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
