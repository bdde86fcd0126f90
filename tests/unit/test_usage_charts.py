"""The namespace page's usage charts: bars scaled to the axis, every hour shown (zero when nothing was
metered), storage in GB-hours, and whatever text reaches the SVG escaped."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from perdure.billing.usage_store import HourlyUsage
from perdure.platform.console.usage_charts import (
    PLOT_HEIGHT,
    TOP,
    BarChart,
    nice_top,
    usage_charts,
    window,
)

NOW = datetime(2026, 11, 3, 14, 25, tzinfo=UTC)
HOURS = window(NOW, 24)


def row(hour: datetime, metric: str, quantity: int) -> HourlyUsage:
    return HourlyUsage("orders", hour, metric, quantity)


def heights(chart: BarChart) -> list[float]:
    return [sum(s.height for s in bar.segments) for bar in chart.bars]


def test_the_window_is_the_last_whole_hours_up_to_now() -> None:
    assert len(HOURS) == 24
    assert HOURS[-1] == datetime(2026, 11, 3, 14, tzinfo=UTC)
    assert HOURS[0] == datetime(2026, 11, 2, 15, tzinfo=UTC)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(HOURS))


def test_bars_scale_to_the_axis_top_and_stack_by_metric() -> None:
    charts = usage_charts(
        [
            row(HOURS[3], "signal", 12),
            row(HOURS[3], "query", 3),  # 15 in that hour: the largest, so the axis runs to 20
            row(HOURS[10], "workflow_started", 5),
        ],
        HOURS,
    )
    chart = charts.actions
    assert chart.top == 20
    assert chart.series == ("workflow_started", "signal", "query")  # metering's order, used ones only
    tall, short = heights(chart)[3], heights(chart)[10]
    assert abs(tall - PLOT_HEIGHT * 15 / 20) < 1e-9
    assert abs(short - tall / 3) < 1e-9
    # Stacked from the axis up, each segment on the one below it.
    first, second = chart.bars[3].segments
    assert (first.name, first.value, second.name, second.value) == (
        "signal",
        Decimal(12),
        "query",
        Decimal(3),
    )
    assert abs(first.y + first.height - (TOP + PLOT_HEIGHT)) < 1e-9
    assert abs(second.y + second.height - first.y) < 1e-9
    assert [t.label for t in chart.ticks] == ["0", "5", "10", "15", "20"]
    assert "2026-11-02 18:00 UTC: 15 actions (signal 12, query 3)" in chart.svg()


def test_the_axis_top_is_a_round_number_at_or_above_the_largest_hour() -> None:
    assert [nice_top(Decimal(v)) for v in (1, 3, 10, 11, 20, 21, 99, 500, 501)] == [
        1,
        5,
        10,
        20,
        20,
        50,
        100,
        500,
        1000,
    ]
    assert nice_top(Decimal("0.000123")) == Decimal("0.0002")
    assert nice_top(Decimal(0)) == 1


def test_hours_without_usage_are_bars_of_zero() -> None:
    charts = usage_charts([row(HOURS[5], "timer_started", 2)], HOURS)
    bars = charts.actions.bars
    assert len(bars) == 24 and [b.hour for b in bars] == list(HOURS)
    assert [b.total for b in bars] == [0] * 5 + [2] + [0] * 18
    assert all(not b.segments for i, b in enumerate(bars) if i != 5)
    svg = charts.actions.svg()
    assert svg.count('<g class="hour">') == 24
    assert "2026-11-02 15:00 UTC: 0 actions" in svg
    # The table has every hour too.
    table = charts.table()
    assert [hour for hour, *_ in table] == list(HOURS)
    assert table[0][2] == 0 and table[5][2] == 2


def test_no_usage_at_all_draws_an_empty_chart() -> None:
    charts = usage_charts([], HOURS)
    for chart in (charts.actions, charts.storage):
        assert chart.empty and chart.top == 1
        assert all(h == 0 for h in heights(chart))
        assert chart.svg().startswith("<svg")
    assert charts.actions.series == ()
    assert charts.storage.series == ("active_storage", "retained_storage")  # always both columns
    assert usage_charts([], []).actions.bars == ()


def test_storage_is_charted_in_gb_hours_apart_from_actions() -> None:
    charts = usage_charts(
        [
            row(HOURS[1], "active_storage", 9 * 10**12),  # 9e12 byte-seconds: 2.5 GB-hours
            row(HOURS[1], "retained_storage", 36 * 10**11),  # 1 GB-hour
            row(HOURS[1], "signal", 4),
        ],
        HOURS,
    )
    assert charts.storage.bars[1].values == (Decimal("2.5"), Decimal(1))
    assert charts.storage.top == 5 and charts.storage.unit == "GB-hours"
    assert charts.actions.bars[1].values == (Decimal(4),)
    assert "3.5 GB-hours (active_storage 2.5, retained_storage 1)" in charts.storage.svg()


def test_rows_outside_the_window_are_left_out() -> None:
    charts = usage_charts(
        [row(HOURS[0] - timedelta(hours=1), "signal", 7), row(HOURS[2], "signal", 1)], HOURS
    )
    assert charts.actions.total == 1


def test_labels_are_escaped_in_the_svg() -> None:
    hostile = '<script>alert("x")</script>&"'
    svg = str(usage_charts([row(HOURS[2], hostile, 3)], HOURS).actions.svg())
    assert "<script>" not in svg and 'alert("x")' not in svg
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&#34;" in svg
