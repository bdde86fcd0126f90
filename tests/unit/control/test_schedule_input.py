"""What ``perdure schedule`` takes: durations, times, overlap policies and definitions, each refused in
one line that names what was wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from perdure.platform.cli.schedule_commands import parse_duration, parse_input, parse_overlap, parse_time
from perdure.platform.control.schedule_requests import ScheduleError
from perdure.platform.control.schedule_text import format_duration, spec_summary
from perdure.platform.core.schedule_spec import IntervalSpec, ScheduleSpec
from perdure.platform.protocol.schedule_wire import ScheduleDefinition, ScheduleRequest, first_error


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2), ("5m", 300), ("1h30m", 5400), ("1d", 86_400), ("500ms", 0.5), ("90", 90), (" 1H ", 3600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("--every", text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2x", "s", "1h 30m", "-5s", "1h-30m"])
def test_a_bad_duration_names_the_option(text: str) -> None:
    with pytest.raises(ScheduleError, match=f"--jitter {text!r}: not a duration"):
        parse_duration("--jitter", text)


@pytest.mark.parametrize("value", [timedelta(seconds=2), timedelta(hours=1, minutes=30), timedelta(days=2)])
def test_durations_are_shown_as_they_are_taken(value: timedelta) -> None:
    assert parse_duration("--every", format_duration(value)) == value


def test_times_need_their_offset_or_are_relative_to_now() -> None:
    assert parse_time("--from", "2026-05-01T09:00:00Z") == datetime(2026, 5, 1, 9, tzinfo=UTC)
    assert parse_time("--from", "2026-05-01T11:00:00+02:00") == datetime(2026, 5, 1, 9, tzinfo=UTC)
    before = datetime.now(UTC)
    assert before - timedelta(minutes=10) <= parse_time("--from", "now-10m") <= datetime.now(UTC)
    assert parse_time("--to", "now") >= before
    with pytest.raises(ScheduleError, match="--to '2026-05-01T09:00:00': not a time with its offset"):
        parse_time("--to", "2026-05-01T09:00:00")
    with pytest.raises(ScheduleError, match="--to 'yesterday'"):
        parse_time("--to", "yesterday")


def test_overlap_policies_and_input() -> None:
    assert parse_overlap("buffer-all") == "buffer_all" and parse_overlap(None) is None
    with pytest.raises(ScheduleError, match="--overlap 'sometimes': one of skip, buffer_one"):
        parse_overlap("sometimes")
    assert parse_input('["a", 1]') == ["a", 1] and parse_input('"a"') == ["a"] and parse_input(None) == []
    with pytest.raises(ScheduleError, match="--input is not JSON"):
        parse_input("{nope")


def test_a_definition_names_what_is_wrong() -> None:
    spec = ScheduleSpec(intervals=(IntervalSpec(every=timedelta(seconds=2)),))
    good = ScheduleDefinition(namespace="ns", schedule_id="nightly.report", workflow_type="Report", spec=spec)
    assert ScheduleDefinition.model_validate_json(good.model_dump_json()) == good
    for fields, message in [
        ({"schedule_id": "has space"}, "schedule id 'has space': 1 to 200 letters"),
        ({"schedule_id": "-dash-first"}, "schedule id '-dash-first'"),
        ({"catchup_window": timedelta(0)}, "catch-up window of 0s: at least 1s"),
        ({"overlap": "never"}, "overlap: Input should be 'skip'"),
    ]:
        with pytest.raises(ValidationError) as caught:
            ScheduleDefinition(**{**good.model_dump(), **fields})
        assert first_error(caught.value).startswith(message)


def test_requests_check_their_period() -> None:
    with pytest.raises(ValidationError) as caught:
        ScheduleRequest(kind="backfill", request_id="r", start=datetime(2026, 1, 1, tzinfo=UTC))
    assert first_error(caught.value) == "a backfill needs a start and an end"
    body = ScheduleRequest(kind="pause", request_id="r", note="why").signal_body()
    assert body == {"version": 1, "request_id": "r", "note": "why"}


def test_a_spec_in_one_line() -> None:
    assert spec_summary(ScheduleSpec(intervals=(IntervalSpec(every=timedelta(seconds=2)),))) == "every 2s"
    spec = ScheduleSpec(crons=("0 9 * * MON-FRI",), time_zone="Europe/Berlin", jitter=timedelta(seconds=30))
    assert spec_summary(spec) == "cron '0 9 * * MON-FRI' in Europe/Berlin, jitter 30s"
    hourly = ScheduleSpec(intervals=(IntervalSpec(every=timedelta(hours=1), offset=timedelta(minutes=15)),))
    assert spec_summary(hourly) == "every 1h offset 15m"
