"""A namespace's metered usage as bar charts: hourly aggregates (as metering keeps them) turned into the
geometry of a stacked bar per hour and drawn as inline SVG, with the same numbers as a table.

Pure: no I/O, no clock. Every hour of the window gets a bar, zero when nothing was metered in it, so a
gap in the chart is a gap in usage. The vertical axis runs to the smallest "nice" number (1, 2 or 5
times a power of ten) at or above the largest hour, so the tallest bar reaches near the top and the
tick labels stay readable. Every text that reaches the markup (metric names, titles, labels) is escaped
by ``Markup.format``; nothing is marked safe as it comes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from markupsafe import Markup

from perdure.billing.metric_units import billed_quantity
from perdure.platform.core.usage import ACTION_METRICS, OPERATIONAL_METRICS, STORAGE_METRICS, hour_of

WIDTH, HEIGHT = 760.0, 250.0
LEFT, RIGHT, TOP, BOTTOM = 70.0, 12.0, 12.0, 48.0
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
TICKS = 4  # intervals on the vertical axis
MAX_HOUR_LABELS = 8
# Hours between labels on the horizontal axis, the first that leaves at most MAX_HOUR_LABELS.
LABEL_STEPS = (1, 2, 3, 6, 12, 24, 48, 72, 168, 336)
ZERO = Decimal(0)


class UsageRow(Protocol):
    """One hourly aggregate (``billing.usage_store.HourlyUsage``): what metering counted of a metric in
    an hour (actions one by one, storage in byte-seconds)."""

    @property
    def hour(self) -> datetime: ...

    @property
    def metric(self) -> str: ...

    @property
    def quantity(self) -> int: ...


@dataclass(frozen=True)
class Segment:
    series: int  # its place in the chart's series: the colour class
    name: str
    value: Decimal
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    hour: datetime
    x: float
    width: float
    values: tuple[Decimal, ...]  # one per series of the chart, zeros included
    segments: tuple[Segment, ...]  # the non-zero values, stacked from the axis up

    @property
    def total(self) -> Decimal:
        return sum(self.values, ZERO)


@dataclass(frozen=True)
class Tick:
    value: Decimal
    y: float

    @property
    def label(self) -> str:
        return decimal_text(self.value)


@dataclass(frozen=True)
class HourLabel:
    x: float
    text: str


@dataclass(frozen=True)
class BarChart:
    key: str  # makes the ids of its SVG elements unique on the page
    title: str
    unit: str
    series: tuple[str, ...]
    bars: tuple[Bar, ...]
    top: Decimal
    ticks: tuple[Tick, ...]
    hour_labels: tuple[HourLabel, ...]

    @property
    def total(self) -> Decimal:
        return sum((bar.total for bar in self.bars), ZERO)

    @property
    def empty(self) -> bool:
        return self.total == 0

    def svg(self) -> Markup:
        return chart_svg(self)


@dataclass(frozen=True)
class UsageCharts:
    hours: tuple[datetime, ...]
    actions: BarChart
    storage: BarChart
    throttled: BarChart

    @property
    def charts(self) -> tuple[BarChart, ...]:
        return (self.actions, self.storage, self.throttled)

    def table(
        self,
    ) -> list[tuple[datetime, tuple[Decimal, ...], Decimal, tuple[Decimal, ...], Decimal]]:
        """Per hour: the actions of each action series, their total, the storage of each storage series,
        the throttled requests."""
        return [
            (hour, actions.values, actions.total, storage.values, throttled.total)
            for hour, actions, storage, throttled in zip(
                self.hours, self.actions.bars, self.storage.bars, self.throttled.bars, strict=True
            )
        ]


def window(now: datetime, hours: int) -> tuple[datetime, ...]:
    """The last ``hours`` whole hours up to the one holding ``now`` (included), oldest first."""
    last = hour_of(now)
    return tuple(last - timedelta(hours=hours - 1 - i) for i in range(hours))


def decimal_text(value: Decimal) -> str:
    """A quantity in fixed point, without trailing zeros (``2.5``, ``20000``, ``0.000125``)."""
    if value == value.to_integral_value():
        return format(value.quantize(Decimal(1)), "f")
    return format(value.normalize(), "f")


def nice_top(maximum: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 times a power of ten at or above ``maximum`` (1 when there is nothing)."""
    if maximum <= 0:
        return Decimal(1)
    base = Decimal(1).scaleb(maximum.adjusted())
    for multiple in (1, 2, 5, 10):
        if base * multiple >= maximum:
            return base * multiple
    raise AssertionError("unreachable: ten times the leading power of ten exceeds any number")


def usage_charts(rows: Iterable[UsageRow], hours: Sequence[datetime]) -> UsageCharts:
    """The actions chart (one series per action metric used in the window, stacked), the storage chart
    (GB-hours, active and retained) and the throttled requests of ``hours``; rows outside them are left
    out."""
    wanted = set(hours)
    actions: dict[datetime, dict[str, Decimal]] = {}
    storage: dict[datetime, dict[str, Decimal]] = {}
    throttled: dict[datetime, dict[str, Decimal]] = {}
    for row in rows:
        hour = hour_of(row.hour)
        if hour not in wanted:
            continue
        if row.metric in STORAGE_METRICS:
            into = storage
        elif row.metric in OPERATIONAL_METRICS:
            into = throttled
        else:
            into = actions
        per_metric = into.setdefault(hour, {})
        per_metric[row.metric] = per_metric.get(row.metric, ZERO) + billed_quantity(row.metric, row.quantity)
    return UsageCharts(
        hours=tuple(hours),
        actions=bar_chart(
            "actions", "Actions per hour", "actions", hours, actions, _series(actions, ACTION_METRICS)
        ),
        storage=bar_chart(
            "storage",
            "Storage per hour",
            "GB-hours",
            hours,
            storage,
            _series(storage, STORAGE_METRICS, always=True),
        ),
        throttled=bar_chart(
            "throttled",
            "Throttled requests per hour",
            "requests",
            hours,
            throttled,
            _series(throttled, OPERATIONAL_METRICS, always=True),
        ),
    )


def _series(
    values: Mapping[datetime, Mapping[str, Decimal]], known: Sequence[str], *, always: bool = False
) -> tuple[str, ...]:
    """The known metrics in their order (all of them, or only those used), then any other in name order."""
    used = {metric for per_metric in values.values() for metric, value in per_metric.items() if value}
    ordered = [m for m in known if always or m in used]
    return (*ordered, *sorted(used - set(known)))


def bar_chart(
    key: str,
    title: str,
    unit: str,
    hours: Sequence[datetime],
    values: Mapping[datetime, Mapping[str, Decimal]],
    series: Sequence[str],
) -> BarChart:
    """A stacked bar per hour of ``hours`` (zero where ``values`` has nothing), scaled to the axis top."""
    per_hour = [tuple(values.get(hour, {}).get(name, ZERO) for name in series) for hour in hours]
    top = nice_top(max((sum(v, ZERO) for v in per_hour), default=ZERO))
    slot = PLOT_WIDTH / max(len(hours), 1)
    bars = []
    for i, (hour, hour_values) in enumerate(zip(hours, per_hour, strict=True)):
        stacked = 0.0
        segments = []
        for index, (name, value) in enumerate(zip(series, hour_values, strict=True)):
            if value <= 0:
                continue
            height = float(value / top) * PLOT_HEIGHT
            stacked += height
            segments.append(Segment(index, name, value, TOP + PLOT_HEIGHT - stacked, height))
        bars.append(Bar(hour, LEFT + i * slot + slot * 0.1, slot * 0.8, hour_values, tuple(segments)))
    ticks = tuple(
        Tick(top * i / TICKS, TOP + PLOT_HEIGHT - PLOT_HEIGHT * i / TICKS) for i in range(TICKS + 1)
    )
    return BarChart(key, title, unit, tuple(series), tuple(bars), top, ticks, _hour_labels(hours, slot))


def _hour_labels(hours: Sequence[datetime], slot: float) -> tuple[HourLabel, ...]:
    if not hours:
        return ()
    step = next((s for s in LABEL_STEPS if len(hours) / s <= MAX_HOUR_LABELS), LABEL_STEPS[-1])
    spans_days = hours[-1] - hours[0] >= timedelta(days=1)
    labels = []
    for i, hour in enumerate(hours):
        # Labels sit on the clock's own marks (00, 06, 12, 18 for every 6 h; midnights for days), so
        # they do not shift as the window moves on.
        if step < 24:
            due = hour.hour % step == 0
            text = f"{hour:%m-%d %H:00}" if spans_days else f"{hour:%H:00}"
        else:
            due = hour.hour == 0 and hour.toordinal() % (step // 24) == 0
            text = f"{hour:%m-%d}"
        if due:
            labels.append(HourLabel(LEFT + (i + 0.5) * slot, text))
    return tuple(labels)


def hour_text(hour: datetime) -> str:
    return f"{hour:%Y-%m-%d %H:00} UTC"


def tooltip(chart: BarChart, bar: Bar) -> str:
    """What hovering an hour says: its total, and what it is made of."""
    parts = [f"{name} {decimal_text(v)}" for name, v in zip(chart.series, bar.values, strict=True) if v]
    made_of = f" ({', '.join(parts)})" if len(parts) > 1 else ""
    return f"{hour_text(bar.hour)}: {decimal_text(bar.total)} {chart.unit}{made_of}"


def chart_svg(chart: BarChart) -> Markup:
    """The chart as an inline SVG element: axes with labels, a bar per hour with a ``<title>`` tooltip,
    colours by class (series-N, from the page's stylesheet)."""
    title_id, desc_id = f"chart-{chart.key}-title", f"chart-{chart.key}-desc"
    hours = len(chart.bars)
    description = (
        f"{chart.title} over {hours} hour{'s' if hours != 1 else ''}: "
        f"{decimal_text(chart.total)} {chart.unit} in all; axis up to {decimal_text(chart.top)}."
    )
    parts = [
        Markup(
            '<svg class="usage-chart" viewBox="0 0 {:g} {:g}" xmlns="http://www.w3.org/2000/svg" '
            'role="img" aria-labelledby="{} {}">'
        ).format(WIDTH, HEIGHT, title_id, desc_id),
        Markup('<title id="{}">{} ({})</title><desc id="{}">{}</desc>').format(
            title_id, chart.title, chart.unit, desc_id, description
        ),
        Markup('<g class="grid">'),
    ]
    for tick in chart.ticks:
        parts.append(
            Markup(
                '<line x1="{:.2f}" x2="{:.2f}" y1="{:.2f}" y2="{:.2f}"></line>'
                '<text class="tick" x="{:.2f}" y="{:.2f}" text-anchor="end" dominant-baseline="middle">'
                "{}</text>"
            ).format(LEFT, LEFT + PLOT_WIDTH, tick.y, tick.y, LEFT - 6, tick.y, tick.label)
        )
    parts.append(Markup('</g><g class="bars">'))
    for bar in chart.bars:
        parts.append(
            Markup(
                '<g class="hour"><title>{}</title>'
                '<rect class="hit" x="{:.2f}" y="{:.2f}" width="{:.2f}" height="{:.2f}"></rect>'
            ).format(tooltip(chart, bar), bar.x, TOP, bar.width, PLOT_HEIGHT)
        )
        for segment in bar.segments:
            parts.append(
                Markup(
                    '<rect class="bar series-{}" x="{:.2f}" y="{:.2f}" width="{:.2f}" height="{:.2f}">'
                    "<title>{}: {} {} {}</title></rect>"
                ).format(
                    segment.series % 10,
                    bar.x,
                    segment.y,
                    bar.width,
                    segment.height,
                    hour_text(bar.hour),
                    segment.name,
                    decimal_text(segment.value),
                    chart.unit,
                )
            )
        parts.append(Markup("</g>"))
    axis_y = TOP + PLOT_HEIGHT
    parts.append(
        Markup('</g><g class="axis"><line x1="{:.2f}" x2="{:.2f}" y1="{:.2f}" y2="{:.2f}"></line>').format(
            LEFT, LEFT + PLOT_WIDTH, axis_y, axis_y
        )
    )
    for label in chart.hour_labels:
        parts.append(
            Markup('<text class="tick" x="{:.2f}" y="{:.2f}" text-anchor="middle">{}</text>').format(
                label.x, axis_y + 16, label.text
            )
        )
    parts.append(
        Markup(
            '<text class="axis-title" x="{:.2f}" y="{:.2f}" text-anchor="middle">hour (UTC)</text>'
            '<text class="axis-title" x="{:.2f}" y="{:.2f}" text-anchor="middle" '
            'transform="rotate(-90 {:.2f} {:.2f})">{}</text></g></svg>'
        ).format(
            LEFT + PLOT_WIDTH / 2,
            HEIGHT - 6,
            14.0,
            TOP + PLOT_HEIGHT / 2,
            14.0,
            TOP + PLOT_HEIGHT / 2,
            chart.unit,
        )
    )
    return Markup("").join(parts)
