"""An invoice as file bytes: the same invoice always gives the same bytes (no clock, fixed order,
fixed-point decimals, ``\\n`` line ends).

CSV (a header row, then one row per line, then a total row) and JSON Lines (one object per line, keys
sorted, ``"type": "line"`` or ``"total"``) have the same columns:

``account, period, status, namespace, metric, quantity, unit, unit_price, currency, amount``

``status`` is ``final`` or ``provisional`` (the period had not ended); ``namespace`` is ``*`` on the free
tier's lines; decimals are written in fixed point (no exponent); the total row has metric ``total`` and
only ``amount``.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Literal

from perdure.billing.invoice import Invoice

ExportFormat = Literal["csv", "jsonl"]
COLUMNS = (
    "account",
    "period",
    "status",
    "namespace",
    "metric",
    "quantity",
    "unit",
    "unit_price",
    "currency",
    "amount",
)


def _fixed(value: Decimal) -> str:
    return format(value, "f")


def _rows(invoice: Invoice) -> list[dict[str, str]]:
    common = {"account": invoice.account, "period": invoice.period.label, "status": invoice.status}
    rows = [
        {
            **common,
            "namespace": line.namespace,
            "metric": line.metric,
            "quantity": _fixed(line.quantity),
            "unit": line.unit,
            "unit_price": _fixed(line.unit_price),
            "currency": invoice.currency,
            "amount": _fixed(line.amount),
        }
        for line in invoice.lines
    ]
    total = {column: "" for column in COLUMNS}
    total.update(common, metric="total", currency=invoice.currency, amount=_fixed(invoice.total))
    return [*rows, total]


def render(invoice: Invoice, export_format: ExportFormat) -> bytes:
    rows = _rows(invoice)
    if export_format == "jsonl":
        lines = [
            json.dumps({**row, "type": "total" if row["metric"] == "total" else "line"}, sort_keys=True)
            for row in rows
        ]
        return ("\n".join(lines) + "\n").encode()
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()
