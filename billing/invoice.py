"""Pricing a period's usage into an account's invoice (pure: no I/O).

- Quantity: actions as counted; storage in GB-hours (``metric_units``).
- Amount of a line: quantity times unit price, rounded half-up to the cent (0.01), per line.
- Free tier: ``included`` is per account and month, per metric; a day's export gets the month's share
  (included divided by the days in the month). It is one negative line per metric (namespace ``*``),
  for at most what the account used of that metric in the period.
- Total: the sum of the lines' amounts.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Literal

from perdure.billing.metric_units import billed_quantity, unit_of
from perdure.billing.price_table import PriceTable
from perdure.platform.core.usage import METRICS

CENT = Decimal("0.01")
FREE_TIER = "*"
Status = Literal["final", "provisional"]


@dataclass(frozen=True)
class BillingPeriod:
    label: str  # "2026-11" (a month) or "2026-11-27" (a day), UTC
    start: datetime
    end: datetime

    @classmethod
    def parse(cls, label: str) -> BillingPeriod:
        if re.fullmatch(r"\d{4}-\d{2}", label):
            year, month = map(int, label.split("-"))
            if not 1 <= month <= 12:
                raise ValueError(f"period {label!r}: no month {month}")
            start = datetime(year, month, 1, tzinfo=UTC)
            days = calendar.monthrange(year, month)[1]
            return cls(label, start, start + timedelta(days=days))
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", label):
            try:
                start = datetime.fromisoformat(label).replace(tzinfo=UTC)
            except ValueError as exc:
                raise ValueError(f"period {label!r}: {exc}") from None
            return cls(label, start, start + timedelta(days=1))
        raise ValueError(f"period {label!r}: a month (2026-11) or a day (2026-11-27) is expected")

    @property
    def is_month(self) -> bool:
        return len(self.label) == 7

    def share_of_month(self) -> Decimal:
        """The part of its month the period covers (1 for a month)."""
        if self.is_month:
            return Decimal(1)
        return Decimal(1) / Decimal(calendar.monthrange(self.start.year, self.start.month)[1])

    def status(self, now: datetime) -> Status:
        """An export of a period that has not ended is provisional: more usage may come."""
        return "final" if now >= self.end else "provisional"


@dataclass(frozen=True)
class InvoiceLine:
    namespace: str  # "*" for the account's free tier
    metric: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Invoice:
    account: str
    period: BillingPeriod
    status: Status
    currency: str
    price_table_version: str
    lines: tuple[InvoiceLine, ...]

    @property
    def total(self) -> Decimal:
        return _cents(sum((line.amount for line in self.lines), Decimal(0)))


def _cents(value: Decimal) -> Decimal:
    rounded = value.quantize(CENT, ROUND_HALF_UP)
    return rounded if rounded != 0 else Decimal("0.00")  # never "-0.00"


def price_usage(
    account: str,
    period: BillingPeriod,
    status: Status,
    metered: Mapping[tuple[str, str], int],
    table: PriceTable,
) -> Invoice:
    """``metered`` is what metering counted per (namespace, metric) in the period; metrics that are
    counted but not billed (throttled requests) are left out."""
    order = {metric: i for i, metric in enumerate(METRICS)}
    billed = {key: count for key, count in metered.items() if key[1] in order}
    lines: list[InvoiceLine] = []
    used: dict[str, Decimal] = {}
    for (namespace, metric), count in sorted(billed.items(), key=lambda k: (k[0][0], order[k[0][1]])):
        if count <= 0:
            continue
        price = table.price(metric)
        quantity = billed_quantity(metric, count)
        used[metric] = used.get(metric, Decimal(0)) + quantity
        lines.append(
            InvoiceLine(
                namespace,
                metric,
                quantity,
                unit_of(metric),
                price.unit_price,
                _cents(quantity * price.unit_price),
            )
        )
    for metric in sorted(used, key=order.__getitem__):
        price = table.price(metric)
        free = min(used[metric], price.included * period.share_of_month())
        if free > 0:
            quantity = -_fixed(free, used[metric])
            lines.append(
                InvoiceLine(
                    FREE_TIER,
                    metric,
                    quantity,
                    unit_of(metric),
                    price.unit_price,
                    _cents(quantity * price.unit_price),
                )
            )
    return Invoice(account, period, status, table.currency, table.version, tuple(lines))


def _fixed(free: Decimal, used: Decimal) -> Decimal:
    """The free quantity written with the places of the quantities it offsets (a day's share of a
    monthly tier is a fraction: six places, rounded down so it never exceeds what was used)."""
    if free == used:
        return used
    if free == free.to_integral_value():
        return free.quantize(Decimal(1))
    return free.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
