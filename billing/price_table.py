"""The price table: a versioned TOML file pricing every metric (unit, unit price, free tier included
per account and period, currency). A table that is not valid is refused with the line that is wrong."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from perdure.billing.metric_units import unit_of
from perdure.platform.core.usage import METRICS

DEFAULT_PRICE_TABLE = Path(__file__).parent / "price_tables" / "2026-11.toml"


class PriceTableError(ValueError):
    """``<file>:<line>: <what is wrong>``."""


def _exact(value: Any) -> Decimal:
    if isinstance(value, float):
        raise ValueError(f'write {value!r} as a string ("{value}"): a float cannot hold a price exactly')
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a decimal number as a string, not {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{value!r} must be a finite number, zero or more")
    return number


class MetricPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: str
    unit_price: Decimal
    included: Decimal = Decimal(0)
    currency: str | None = None

    _decimal = field_validator("unit_price", "included", mode="before")(_exact)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"{value!r} is not a currency code (three capital letters, like USD)")
        return value


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=50)
    currency: str
    metrics: dict[str, MetricPrice]

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"{value!r} is not a currency code (three capital letters, like USD)")
        return value

    def price(self, metric: str) -> MetricPrice:
        return self.metrics[metric]


def load_price_table(path: Path = DEFAULT_PRICE_TABLE) -> PriceTable:
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise PriceTableError(f"{path}:{line.group(1) if line else '?'}: {exc}") from None
    try:
        table = PriceTable.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = tuple(str(part) for part in error["loc"])
        raise PriceTableError(
            f"{path}:{_line_of(text, location)}: {_describe(location, error['msg'])}"
        ) from None
    for metric, price in table.metrics.items():
        _check_metric(path, text, table, metric, price)
    missing = [metric for metric in METRICS if metric not in table.metrics]
    if missing:
        raise PriceTableError(f"{path}:{_line_of(text, ('metrics',))}: no price for {', '.join(missing)}")
    return table


def _check_metric(path: Path, text: str, table: PriceTable, metric: str, price: MetricPrice) -> None:
    where: tuple[str, ...] = ("metrics", metric)
    if metric not in METRICS:
        problem = f"unknown metric {metric!r}; metered are: {', '.join(METRICS)}"
    elif price.unit != unit_of(metric):
        problem, where = f"{metric} is billed in {unit_of(metric)!r}, not {price.unit!r}", (*where, "unit")
    elif price.currency is not None and price.currency != table.currency:
        problem = f"{metric} is priced in {price.currency}, the table in {table.currency} (one currency)"
        where = (*where, "currency")
    else:
        return
    raise PriceTableError(f"{path}:{_line_of(text, where)}: {problem}")


def _describe(location: tuple[str, ...], message: str) -> str:
    where = ".".join(location)
    return f"{where}: {message.removeprefix('Value error, ')}"


def _line_of(text: str, location: tuple[str, ...]) -> int:
    """The line a location of the table is on: a key's own line if it is written, else its section's
    header (for a missing key), else the first line."""
    lines = [line.strip().replace(" ", "") for line in text.splitlines()]
    first_section = next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))

    def key_line(key: str, start: int, end: int) -> int | None:
        return next((i + 1 for i in range(start, end) if lines[i].startswith(f"{key}=")), None)

    if location and location[0] == "metrics":
        if len(location) == 1:
            return first_section + 1
        header = next((i for i, line in enumerate(lines) if line == f"[metrics.{location[1]}]"), None)
        if header is None:
            return first_section + 1
        end = next((i for i in range(header + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        found = key_line(location[2], header + 1, end) if len(location) > 2 else None
        return found or header + 1
    return (key_line(location[0], 0, first_section) if location else None) or 1
