"""What the ``billing`` exchange (in the system namespace's vhost) carries: one announcement per export,
routed by ``export.<period>``, naming the files written and their SHA-256 checksums."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

BILLING_EXCHANGE = "billing"


def announcement_routing_key(period: str) -> str:
    return f"export.{period}"


class ExportedFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    account: str
    name: str  # relative to the export directory: "<period>/<account>.<format>"
    sha256: str
    bytes: int
    total: str  # the invoice total, a decimal string in ``currency``


class ExportAnnouncement(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: Literal[1] = 1
    period: str
    status: Literal["final", "provisional"]
    format: Literal["csv", "jsonl"]
    currency: str
    price_table_version: str
    files: list[ExportedFile]
