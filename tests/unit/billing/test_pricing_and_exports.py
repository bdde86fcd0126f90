"""Price tables, invoices and export bytes: pure logic, no services."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from perdure.billing.export_files import render
from perdure.billing.invoice import BillingPeriod, price_usage
from perdure.billing.price_table import DEFAULT_PRICE_TABLE, PriceTableError, load_price_table

# A small table whose amounts are easy to work out by hand (the integration tests price with it too).
SMALL_TABLE = (Path(__file__).parents[2] / "hand_prices.toml").read_text()


def table_file(tmp_path: Path, text: str = SMALL_TABLE) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return path


def test_the_shipped_price_table_prices_every_metric() -> None:
    table = load_price_table(DEFAULT_PRICE_TABLE)
    assert table.currency == "USD" and table.price("query").unit_price == Decimal("0.000025")


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (('unit_price = "0.10"', "unit_price = 0.10"), 11, "write 0.1 as a string"),
        (("[metrics.query]", "[metrics.queries]"), 14, "unknown metric 'queries'"),
        (
            ('unit = "GB-hour"\nunit_price = "2.00"', 'unit = "GB"\nunit_price = "2.00"'),
            40,
            "billed in 'GB-hour'",
        ),
        (('currency = "EUR"', 'currency = "euro"'), 2, "not a currency code"),
        (('unit_price = "0.0125"', 'unit_price = "-1"'), 16, "zero or more"),
        (('unit_price = "0.0125"', 'unit_price = "0.0125"\ncolour = "red"'), 17, "colour: Extra inputs"),
        (('[metrics.query]\nunit = "action"\nunit_price = "0.0125"\n', ""), 4, "no price for query"),
        (('version = "hand-1"', 'version = "hand-1'), 1, "Illegal character"),
    ],
)
def test_a_bad_price_table_is_refused_with_its_line(
    tmp_path: Path, change: tuple[str, str], line: int, message: str
) -> None:
    old, new = change
    assert old in SMALL_TABLE
    path = table_file(tmp_path, SMALL_TABLE.replace(old, new, 1))
    with pytest.raises(PriceTableError) as refused:
        load_price_table(path)
    assert str(refused.value).startswith(f"{path}:{line}: "), str(refused.value)
    assert message.lower() in str(refused.value).lower()


def test_periods_parse_and_know_whether_they_ended() -> None:
    month = BillingPeriod.parse("2026-02")
    assert (month.start, month.end) == (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    assert month.status(datetime(2026, 2, 28, 23, 59, tzinfo=UTC)) == "provisional"
    assert month.status(datetime(2026, 3, 1, tzinfo=UTC)) == "final"
    day = BillingPeriod.parse("2026-02-14")
    assert day.share_of_month() == Decimal(1) / Decimal(28)
    for bad in ("2026-13", "2026-02-30", "Feb 2026"):
        with pytest.raises(ValueError, match="period"):
            BillingPeriod.parse(bad)


def test_an_invoice_matches_a_hand_computed_example(tmp_path: Path) -> None:
    table = load_price_table(table_file(tmp_path))
    period = BillingPeriod.parse("2026-11")
    metered = {
        ("shop", "workflow_started"): 30,  # 30 x 0.25 = 7.50
        ("shop", "signal"): 5,  # 5 x 0.10 = 0.50
        ("shop", "query"): 3,  # 3 x 0.0125 = 0.0375 -> 0.04
        ("shop", "activity_started"): 2,  # 2 x 0.05 = 0.10
        ("shop", "reset"): 2,  # 2 x 0.025 = 0.05
        ("lab", "workflow_started"): 4,  # 4 x 0.25 = 1.00
        ("lab", "active_storage"): 9 * 10**12,  # byte-seconds: 2.5 GB-hours x 2.00 = 5.00
        ("lab", "timer_started"): 0,  # nothing used: no line
        ("shop", "throttled_request"): 40,  # counted, never billed: no line
    }
    invoice = price_usage("acme", period, "final", metered, table)
    got = [(line.namespace, line.metric, str(line.quantity), str(line.amount)) for line in invoice.lines]
    assert got == [
        ("lab", "workflow_started", "4", "1.00"),
        ("lab", "active_storage", "2.500000", "5.00"),
        ("shop", "workflow_started", "30", "7.50"),
        ("shop", "signal", "5", "0.50"),
        ("shop", "query", "3", "0.04"),
        ("shop", "activity_started", "2", "0.10"),
        ("shop", "reset", "2", "0.05"),
        # The free tier, per account: 10 of the 34 starts, and the 2 activities (of 3 included).
        ("*", "workflow_started", "-10", "-2.50"),
        ("*", "activity_started", "-2", "-0.10"),
    ]
    assert invoice.total == Decimal("11.59")


def test_a_day_gets_its_share_of_the_monthly_free_tier(tmp_path: Path) -> None:
    table = load_price_table(table_file(tmp_path))
    invoice = price_usage(
        "acme", BillingPeriod.parse("2026-11-05"), "final", {("shop", "workflow_started"): 2}, table
    )
    free = invoice.lines[-1]
    assert (free.namespace, free.quantity) == ("*", Decimal("-0.333333"))  # 10 / 30 days, rounded down
    assert invoice.total == Decimal("0.42")  # 0.50 - 0.08


def test_export_bytes_are_fixed_by_the_invoice(tmp_path: Path) -> None:
    table = load_price_table(table_file(tmp_path))
    period = BillingPeriod.parse("2026-11")
    metered = {("shop", "query"): 3, ("shop", "signal"): 1}
    csv_bytes = render(price_usage("acme", period, "provisional", metered, table), "csv")
    assert csv_bytes == render(price_usage("acme", period, "provisional", dict(metered), table), "csv")
    assert csv_bytes.decode() == (
        "account,period,status,namespace,metric,quantity,unit,unit_price,currency,amount\n"
        "acme,2026-11,provisional,shop,signal,1,action,0.10,EUR,0.10\n"
        "acme,2026-11,provisional,shop,query,3,action,0.0125,EUR,0.04\n"
        "acme,2026-11,provisional,,total,,,,EUR,0.14\n"
    )
    jsonl = render(price_usage("acme", period, "final", {}, table), "jsonl").decode()
    assert jsonl == (
        '{"account": "acme", "amount": "0.00", "currency": "EUR", "metric": "total", "namespace": "", '
        '"period": "2026-11", "quantity": "", "status": "final", "type": "total", "unit": "", '
        '"unit_price": ""}\n'
    )
