"""When a schedule's actions fall due: its specification (cron expressions, fixed intervals, a time zone,
bounds, exclusions, jitter) and the pure functions that list its action times.

A schedule runs as a durable workflow that sleeps on durable timers until its next action time, so
everything here is deterministic: every input is an argument (no clock, no global randomness), and the
same spec and bounds give the same times on every replay. Times go in and come out as aware datetimes,
and come out in UTC.

Cron expressions are parsed and evaluated with ``cronsim``, chosen over ``croniter`` because it
deliberately reproduces Debian cron's documented DST behaviour with ``zoneinfo`` zones, where croniter's
DST handling has a long record of skipped and doubled fire times. Supported: the standard 5 fields
(minute hour day-of-month month day-of-week, with names, ranges, steps, lists, and cronsim's ``L``,
``LW`` and ``DOW#n``) and the aliases ``@yearly``/``@annually``, ``@monthly``, ``@weekly``,
``@daily``/``@midnight``, ``@hourly``. Not supported: the 6-field form with seconds, because cronsim
evaluates it in elapsed time without Debian's DST rules (a fixed time in a repeated hour would fire
twice); use an interval for sub-minute schedules.

Cron expressions are evaluated on the wall clock of the spec's time zone, with Debian cron's rules
across a DST change:

- An expression with a fixed minute and hour (neither field starts with ``*``: ``30 2 * * *``,
  ``0 9-17 * * MON-FRI``) names wall-clock times. One that does not exist (spring forward) fires once, at
  the first valid instant after the gap (``30 2 * * *`` fires at 03:00 on the day New York skips
  02:00-02:59; several skipped times collapse into that one firing). One that occurs twice (fall back)
  fires once, on its first occurrence. (Temporal's own calendar skips the first and doubles the second;
  cron's rule loses no action and doubles none.)
- An expression whose minute or hour is a wildcard (``*/15 * * * *``, ``0 * * * *``) means "every so
  often" and follows elapsed time: it fires in both passes of a repeated hour and has nothing to fire in
  a skipped one, so its actions stay evenly spaced in real time.

Intervals are absolute: the times ``epoch + offset + k * every`` for whole ``k`` (aligned to the Unix
epoch, as Temporal's interval specs are), whatever the time zone. ``every`` and ``offset`` are whole
seconds, Temporal's resolution, which is also what a scheduled start's workflow id names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Exclusions can reject every time ("* * * * *" excluded): past this many excluded wall-clock minutes
# in a row (two weeks of a per-minute schedule, 2.3 years of an hourly one), the spec is treated as
# having no further times, so that a workflow task is not spent searching (about a second at worst).
_MAX_EXCLUDED_MINUTES_IN_A_ROW = 20_000


class ScheduleSpecError(ValueError):
    """A schedule spec that cannot be used, naming the field, the offending value and why:
    ``cron '61 * * * *': Bad minute`` (the reason is the cron library's own message)."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field} {str(value)!r}: {reason}")


class _SpecModel(BaseModel):
    """Frozen, and constructing one with bad values raises ``ScheduleSpecError`` rather than pydantic's
    ``ValidationError`` (itself a ValueError; ``model_validate`` of stored state still raises that)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _spec_error_of(exc) from exc


def _spec_error_of(exc: ValidationError) -> ScheduleSpecError:
    errors = exc.errors()
    for error in errors:
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, ScheduleSpecError):
            return cause
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "spec"
    return ScheduleSpecError(field, first.get("input"), first["msg"])


class IntervalSpec(_SpecModel):
    """Every ``every`` (at least 1 s) from the Unix epoch, shifted by ``offset`` in ``[0, every)``:
    ``every=1h, offset=15min`` fires at a quarter past every hour (UTC)."""

    every: timedelta
    offset: timedelta = timedelta(0)

    @model_validator(mode="after")
    def _check(self) -> IntervalSpec:
        if self.every < timedelta(seconds=1) or self.every % timedelta(seconds=1):
            raise ScheduleSpecError(
                "interval.every", self.every, "must be a whole number of seconds, at least 1"
            )
        if self.offset % timedelta(seconds=1):
            raise ScheduleSpecError("interval.offset", self.offset, "must be a whole number of seconds")
        if not timedelta(0) <= self.offset < self.every:
            raise ScheduleSpecError("interval.offset", self.offset, f"must be in [0, every={self.every})")
        return self


class ScheduleSpec(_SpecModel):
    """When a schedule's actions fall due: the union of its cron expressions (evaluated in
    ``time_zone``) and intervals, within ``[start_at, end_at]`` (both inclusive, as Temporal's), less the
    times whose wall clock matches one of ``exclude_crons`` (5-field expressions match the minute), each
    action then delayed by a deterministic jitter in ``[0, jitter)`` (see ``jittered``)."""

    crons: tuple[str, ...] = ()
    intervals: tuple[IntervalSpec, ...] = ()
    time_zone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    jitter: timedelta = timedelta(0)
    exclude_crons: tuple[str, ...] = ()

    @field_validator("crons")
    @classmethod
    def _check_crons(cls, crons: tuple[str, ...]) -> tuple[str, ...]:
        for expr in crons:
            _parse_cron("cron", expr)
        return crons

    @field_validator("exclude_crons")
    @classmethod
    def _check_exclusions(cls, crons: tuple[str, ...]) -> tuple[str, ...]:
        for expr in crons:
            _parse_cron("exclude_cron", expr)
        return crons

    @field_validator("time_zone")
    @classmethod
    def _check_time_zone(cls, name: str) -> str:
        _zone("time_zone", name)
        return name

    @field_validator("start_at", "end_at")
    @classmethod
    def _check_bound(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ScheduleSpecError(info.field_name or "bound", value.isoformat(), "must be timezone-aware")
        return value.astimezone(UTC)

    @field_validator("jitter")
    @classmethod
    def _check_jitter(cls, jitter: timedelta) -> timedelta:
        if jitter < timedelta(0):
            raise ScheduleSpecError("jitter", jitter, "must not be negative")
        return jitter

    @model_validator(mode="after")
    def _check_bounds(self) -> ScheduleSpec:
        if self.start_at is not None and self.end_at is not None and self.end_at < self.start_at:
            raise ScheduleSpecError("end_at", self.end_at.isoformat(), "must not be before start_at")
        return self

    @property
    def zone(self) -> tzinfo:
        return _zone("time_zone", self.time_zone)


def next_action_times(spec: ScheduleSpec, after: datetime, limit: int) -> list[datetime]:
    """The first ``limit`` nominal action times strictly after ``after``: sorted, de-duplicated across
    crons and intervals, within the spec's bounds, in UTC. Fewer when the spec runs out (``end_at``)."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    times: list[datetime] = []
    if limit == 0:
        return times
    for time in _action_times(spec, _aware("after", after)):
        times.append(time)
        if len(times) == limit:
            break
    return times


def action_times_between(
    spec: ScheduleSpec, start: datetime, end: datetime, *, limit: int | None = None
) -> list[datetime]:
    """The nominal action times in ``(start, end]``, sorted, in UTC: half-open so that consecutive
    windows (the last processed time up to now) cover each time exactly once. At most ``limit``."""
    start, end = _aware("start", start), _aware("end", end)
    times: list[datetime] = []
    if end <= start or limit == 0:
        return times
    for time in _action_times(spec, start):
        if time > end:
            break
        times.append(time)
        if limit is not None and len(times) == limit:
            break
    return times


def jittered(
    spec_jitter: timedelta, schedule_id: str, nominal_time: datetime, *, next_nominal: datetime | None = None
) -> datetime:
    """When to take the action due at ``nominal_time``: up to ``spec_jitter`` later, by an amount in
    ``[0, spec_jitter)`` derived from a hash of (schedule id, nominal time), so that a replay computes
    the same time and different schedules due at the same moment spread out. Given ``next_nominal`` (the
    following action time), the jitter stays below the gap to it, so actions never change order (as in
    Temporal)."""
    nominal = _aware("nominal_time", nominal_time).astimezone(UTC)
    window = spec_jitter
    if next_nominal is not None:
        window = min(window, _aware("next_nominal", next_nominal) - nominal)
    window_us = _microseconds(window)
    if window_us <= 0:
        return nominal
    seed = f"{schedule_id}\x00{nominal.isoformat()}".encode()
    draw = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big")
    return nominal + timedelta(microseconds=draw % window_us)


def _action_times(spec: ScheduleSpec, after: datetime) -> Iterator[datetime]:
    """Every action time strictly after ``after`` (aware), in increasing order, bounds and exclusions
    applied. Lazy: the sources are unbounded unless ``end_at`` stops them."""
    lower = after.astimezone(UTC)
    if spec.start_at is not None:
        # Action times are whole seconds, so one microsecond before start_at makes it inclusive.
        lower = max(lower, spec.start_at - _ONE_MICROSECOND)
    zone = spec.zone
    crons = [_CronCursor(expr, zone, lower) for expr in spec.crons]
    excluded_minutes = 0
    while True:
        # The earliest time of any source after ``lower``: an instant two sources share comes once.
        candidates = [cron.next_after(lower) for cron in crons]
        candidates += [_next_interval_time(interval, lower) for interval in spec.intervals]
        time = min((candidate for candidate in candidates if candidate is not None), default=None)
        if time is None or (spec.end_at is not None and time > spec.end_at):
            return
        if spec.exclude_crons:
            local = time.astimezone(zone)
            if any(_matches(expr, _wall_minute(local)) for expr in spec.exclude_crons):
                excluded_minutes += 1
                if excluded_minutes >= _MAX_EXCLUDED_MINUTES_IN_A_ROW:
                    return
                # Every time in this wall-clock minute is excluded: go on from its last second.
                lower = time + timedelta(seconds=59 - local.second)
                continue
            excluded_minutes = 0
        lower = time
        yield time


class _CronCursor:
    """A cron expression's times in increasing order, read up to a moving lower bound."""

    def __init__(self, expr: str, zone: tzinfo, lower: datetime) -> None:
        self._times = _cron_times(expr, zone, lower)
        self._next: datetime | None = next(self._times, None)

    def next_after(self, lower: datetime) -> datetime | None:
        while self._next is not None and self._next <= lower:
            self._next = next(self._times, None)
        return self._next


def _cron_times(expr: str, zone: tzinfo, lower: datetime) -> Iterator[datetime]:
    it = CronSim(_expand(expr), lower.astimezone(zone))
    for local in it:
        time = local.astimezone(UTC)
        # For fixed-time expressions cronsim walks the wall clock, so from inside the second pass of a
        # repeated hour it answers with the first pass's instant: earlier than asked for, and already
        # the one firing of that time.
        if time > lower:
            yield time


def _next_interval_time(interval: IntervalSpec, lower: datetime) -> datetime | None:
    """The first ``epoch + offset + k * every`` strictly after ``lower``."""
    every = _microseconds(interval.every)
    offset = _microseconds(interval.offset)
    k = (_microseconds(lower - _EPOCH) - offset) // every + 1
    try:
        return _EPOCH + timedelta(microseconds=offset + k * every)
    except OverflowError:
        return None


def _wall_minute(local: datetime) -> datetime:
    """The naive wall-clock minute of ``local``: exclusions match the wall clock, so DST plays no part
    (``30 1 * * *`` excludes 01:30 in both passes of a repeated hour)."""
    return local.replace(second=0, microsecond=0, tzinfo=None, fold=0)


def _matches(expr: str, wall: datetime) -> bool:
    try:
        return next(CronSim(_expand(expr), wall - timedelta(seconds=1))) == wall
    except StopIteration:
        return False


def _parse_cron(field: str, expr: str) -> None:
    expanded = _expand(expr)
    fields = len(expanded.split())
    if fields == 6:
        raise ScheduleSpecError(
            field,
            expr,
            "6-field expressions (with seconds) are not supported; use an interval for sub-minute schedules",
        )
    if fields != 5:
        raise ScheduleSpecError(
            field, expr, f"expected 5 fields (minute hour day-of-month month day-of-week), got {fields}"
        )
    try:
        CronSim(expanded, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ScheduleSpecError(field, expr, str(exc)) from exc


def _expand(expr: str) -> str:
    stripped = expr.strip()
    return _ALIASES.get(stripped.lower(), stripped)


def _zone(field: str, name: str) -> tzinfo:
    try:
        return _load_zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ScheduleSpecError(
            field, name, "unknown time zone (expected an IANA name such as 'Europe/Berlin')"
        ) from exc


@lru_cache(maxsize=256)
def _load_zone(name: str) -> tzinfo:
    if name == "UTC":
        # cronsim takes its fast path (no DST handling) only for datetime.UTC itself.
        return UTC
    return ZoneInfo(name)


def _aware(name: str, value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value.isoformat()}")
    return value


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
