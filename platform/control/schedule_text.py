"""How a schedule is shown: its spec in one line (``every 2s``, ``cron '0 9 * * MON-FRI' in
Europe/Berlin``) and durations as the CLI takes them (``1h30m``, ``2s``)."""

from __future__ import annotations

from datetime import timedelta

from perdure.platform.core.schedule_spec import ScheduleSpec


def spec_summary(spec: ScheduleSpec) -> str:
    parts = [f"cron {expr!r}" for expr in spec.crons]
    for interval in spec.intervals:
        every = f"every {format_duration(interval.every)}"
        parts.append(f"{every} offset {format_duration(interval.offset)}" if interval.offset else every)
    summary = ", ".join(parts) or "no action times (trigger and backfill only)"
    if spec.crons and spec.time_zone != "UTC":
        summary += f" in {spec.time_zone}"
    if spec.jitter:
        summary += f", jitter {format_duration(spec.jitter)}"
    if spec.start_at is not None:
        summary += f", from {spec.start_at.isoformat()}"
    if spec.end_at is not None:
        summary += f", until {spec.end_at.isoformat()}"
    return summary


def format_duration(value: timedelta) -> str:
    """``1d``, ``1h30m``, ``2s``, ``1.5s``."""
    if value < timedelta(0):
        return f"-{format_duration(-value)}"
    if not value:
        return "0s"
    whole, fraction = divmod(value.total_seconds(), 1)
    days, rest = divmod(int(whole), 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    if fraction:
        text += f"{seconds + fraction:g}s"
    elif seconds:
        text += f"{seconds}s"
    return text
