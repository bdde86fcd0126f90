"""When a schedule's actions fall due: crons in a time zone (DST and leap days included), intervals
aligned to the epoch, bounds, exclusions, deterministic jitter, and what a bad spec is told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perdure.platform.core.schedule_spec import (
    IntervalSpec,
    ScheduleSpec,
    ScheduleSpecError,
    action_times_between,
    jittered,
    next_action_times,
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def every(seconds: int, offset: int = 0) -> IntervalSpec:
    return IntervalSpec(every=timedelta(seconds=seconds), offset=timedelta(seconds=offset))


# --- crons -------------------------------------------------------------------------------------------


def test_a_weekday_cron_skips_the_weekend() -> None:
    spec = ScheduleSpec(crons=("0 9 * * MON-FRI",))
    # 2026-01-02 is a Friday.
    assert next_action_times(spec, utc(2026, 1, 2, 8), 3) == [
        utc(2026, 1, 2, 9),
        utc(2026, 1, 5, 9),
        utc(2026, 1, 6, 9),
    ]


def test_times_are_strictly_after_the_given_time() -> None:
    spec = ScheduleSpec(crons=("0 * * * *",))
    assert next_action_times(spec, utc(2026, 1, 1, 10), 1) == [utc(2026, 1, 1, 11)]
    assert next_action_times(spec, utc(2026, 1, 1, 10) - timedelta(microseconds=1), 1) == [
        utc(2026, 1, 1, 10)
    ]


def test_a_cron_follows_the_wall_clock_of_its_time_zone() -> None:
    spec = ScheduleSpec(crons=("0 9 * * *",), time_zone="Europe/Berlin")
    # 09:00 in Berlin is 08:00 UTC in winter (CET) and 07:00 UTC in summer (CEST).
    assert next_action_times(spec, utc(2026, 1, 10), 1) == [utc(2026, 1, 10, 8)]
    assert next_action_times(spec, utc(2026, 7, 10), 1) == [utc(2026, 7, 10, 7)]


def test_the_answer_is_in_utc_whatever_zone_the_question_was_asked_in() -> None:
    spec = ScheduleSpec(crons=("0 9 * * *",), time_zone="America/New_York")
    tokyo_midnight = datetime.fromisoformat("2026-01-10T00:00:00+09:00")
    (first,) = next_action_times(spec, tokyo_midnight, 1)
    assert first == utc(2026, 1, 10, 14)
    assert first.tzinfo is UTC


def test_aliases_expand_to_their_cron() -> None:
    spec = ScheduleSpec(crons=("@daily", "@hourly"))
    assert next_action_times(spec, utc(2026, 1, 1, 22, 30), 3) == [
        utc(2026, 1, 1, 23),
        utc(2026, 1, 2, 0),  # both @daily and @hourly: once
        utc(2026, 1, 2, 1),
    ]


def test_leap_day_cron_fires_only_on_february_29() -> None:
    spec = ScheduleSpec(crons=("0 12 29 2 *",))
    assert next_action_times(spec, utc(2026, 1, 1), 3) == [
        utc(2028, 2, 29, 12),
        utc(2032, 2, 29, 12),
        utc(2036, 2, 29, 12),
    ]
    assert action_times_between(spec, utc(2026, 1, 1), utc(2028, 2, 28, 23, 59)) == []


def test_the_leap_day_counts_in_a_daily_cron() -> None:
    spec = ScheduleSpec(crons=("0 0 * 2 *",), time_zone="Europe/Berlin")
    days = action_times_between(spec, utc(2028, 2, 27), utc(2028, 3, 2))
    assert [day.astimezone(spec.zone).date().isoformat() for day in days] == [
        "2028-02-28",
        "2028-02-29",
    ]


# --- DST ---------------------------------------------------------------------------------------------


def test_spring_forward_a_skipped_wall_time_fires_once_at_the_first_valid_instant_new_york() -> None:
    # 2026-03-08: New York goes from 01:59:59 EST to 03:00:00 EDT; 02:30 does not exist that day.
    spec = ScheduleSpec(crons=("30 2 * * *",), time_zone="America/New_York")
    assert next_action_times(spec, utc(2026, 3, 7), 3) == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        utc(2026, 3, 8, 7, 0),  # 03:00 EDT, the first instant after the gap
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]


def test_spring_forward_berlin() -> None:
    # 2026-03-29: Berlin goes from 01:59:59 CET to 03:00:00 CEST.
    spec = ScheduleSpec(crons=("30 2 * * *",), time_zone="Europe/Berlin")
    assert next_action_times(spec, utc(2026, 3, 28), 3) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_spring_forward_several_skipped_times_collapse_into_one_action() -> None:
    spec = ScheduleSpec(crons=("0,15,30,45 2 * * *",), time_zone="America/New_York")
    assert action_times_between(spec, utc(2026, 3, 8, 5), utc(2026, 3, 8, 12)) == [utc(2026, 3, 8, 7)]


def test_spring_forward_an_every_so_often_cron_keeps_elapsed_time() -> None:
    spec = ScheduleSpec(crons=("*/30 * * * *",), time_zone="America/New_York")
    assert action_times_between(spec, utc(2026, 3, 8, 6), utc(2026, 3, 8, 8)) == [
        utc(2026, 3, 8, 6, 30),  # 01:30 EST
        utc(2026, 3, 8, 7, 0),  # 03:00 EDT: half an hour later
        utc(2026, 3, 8, 7, 30),
        utc(2026, 3, 8, 8, 0),
    ]


def test_fall_back_a_repeated_wall_time_fires_once_new_york() -> None:
    # 2026-11-01: New York's 01:00-01:59 happens twice (EDT, then EST).
    spec = ScheduleSpec(crons=("30 1 * * *",), time_zone="America/New_York")
    assert next_action_times(spec, utc(2026, 10, 31, 12), 2) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT, the first pass; not 06:30 (01:30 EST) too
        utc(2026, 11, 2, 6, 30),
    ]


def test_fall_back_asked_from_inside_the_second_pass_does_not_fire_again() -> None:
    spec = ScheduleSpec(crons=("30 1 * * *",), time_zone="America/New_York")
    inside_second_pass = utc(2026, 11, 1, 6, 10)  # 01:10 EST, after 01:30 EDT fired
    assert next_action_times(spec, inside_second_pass, 1) == [utc(2026, 11, 2, 6, 30)]


def test_fall_back_berlin() -> None:
    # 2026-10-25: Berlin's 02:00-02:59 happens twice (CEST, then CET).
    spec = ScheduleSpec(crons=("30 2 * * *",), time_zone="Europe/Berlin")
    assert action_times_between(spec, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12)) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST only
        utc(2026, 10, 26, 1, 30),
    ]


def test_fall_back_an_every_so_often_cron_fires_in_both_passes() -> None:
    spec = ScheduleSpec(crons=("0 * * * *",), time_zone="America/New_York")
    assert action_times_between(spec, utc(2026, 11, 1, 4), utc(2026, 11, 1, 7)) == [
        utc(2026, 11, 1, 5),  # 01:00 EDT
        utc(2026, 11, 1, 6),  # 01:00 EST: an hour later, as an hourly schedule should
        utc(2026, 11, 1, 7),  # 02:00 EST
    ]


def test_intervals_ignore_the_time_zone_and_its_dst() -> None:
    hourly = (every(3600),)
    new_york = ScheduleSpec(intervals=hourly, time_zone="America/New_York")
    plain = ScheduleSpec(intervals=hourly)
    window = (utc(2026, 11, 1, 3), utc(2026, 11, 1, 9))
    assert action_times_between(new_york, *window) == action_times_between(plain, *window)
    assert len(action_times_between(new_york, *window)) == 6


# --- intervals ---------------------------------------------------------------------------------------


def test_an_interval_is_aligned_to_the_unix_epoch_plus_its_offset() -> None:
    spec = ScheduleSpec(intervals=(every(3600, offset=15 * 60),))
    assert next_action_times(spec, utc(2026, 1, 1, 10, 20), 2) == [
        utc(2026, 1, 1, 11, 15),
        utc(2026, 1, 1, 12, 15),
    ]


def test_an_interval_that_does_not_divide_a_day_still_counts_from_the_epoch() -> None:
    seven_minutes = 7 * 60
    spec = ScheduleSpec(intervals=(every(seven_minutes, offset=30),))
    times = next_action_times(spec, utc(2026, 5, 17, 13, 2), 3)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert all((time - epoch).total_seconds() % seven_minutes == 30 for time in times)
    assert times[0] - utc(2026, 5, 17, 13, 2) <= timedelta(seconds=seven_minutes)
    assert [b - a for a, b in pairwise(times)] == [timedelta(seconds=seven_minutes)] * 2


def test_crons_and_intervals_merge_sorted_and_each_instant_once() -> None:
    spec = ScheduleSpec(crons=("0 * * * *", "0 */2 * * *"), intervals=(every(1800),))
    assert next_action_times(spec, utc(2026, 1, 1), 5) == [
        utc(2026, 1, 1, 0, 30),
        utc(2026, 1, 1, 1, 0),
        utc(2026, 1, 1, 1, 30),
        utc(2026, 1, 1, 2, 0),
        utc(2026, 1, 1, 2, 30),
    ]


def test_an_empty_spec_has_no_times() -> None:
    assert next_action_times(ScheduleSpec(), utc(2026, 1, 1), 5) == []


# --- bounds, windows, exclusions ---------------------------------------------------------------------


def test_start_and_end_bounds_are_inclusive() -> None:
    spec = ScheduleSpec(crons=("0 * * * *",), start_at=utc(2026, 1, 1, 10), end_at=utc(2026, 1, 1, 12))
    assert next_action_times(spec, utc(2025, 1, 1), 10) == [
        utc(2026, 1, 1, 10),
        utc(2026, 1, 1, 11),
        utc(2026, 1, 1, 12),
    ]
    assert next_action_times(spec, utc(2026, 1, 1, 12), 10) == []


def test_a_start_between_action_times_begins_at_the_next_one() -> None:
    spec = ScheduleSpec(intervals=(every(600),), start_at=utc(2026, 1, 1, 10, 0, 1))
    assert next_action_times(spec, utc(2026, 1, 1), 1) == [utc(2026, 1, 1, 10, 10)]


def test_bounds_in_another_zone_are_kept_as_the_same_instant_in_utc() -> None:
    spec = ScheduleSpec(start_at=datetime.fromisoformat("2026-01-01T12:00:00+02:00"))
    assert spec.start_at == utc(2026, 1, 1, 10)


def test_between_is_half_open_so_consecutive_windows_cover_each_time_once() -> None:
    spec = ScheduleSpec(crons=("*/10 * * * *",))
    first = action_times_between(spec, utc(2026, 1, 1, 0), utc(2026, 1, 1, 0, 30))
    second = action_times_between(spec, utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1))
    assert first == [utc(2026, 1, 1, 0, minute) for minute in (10, 20, 30)]
    assert second == [utc(2026, 1, 1, 0, minute) for minute in (40, 50)] + [utc(2026, 1, 1, 1)]
    assert action_times_between(spec, utc(2026, 1, 1, 1), utc(2026, 1, 1, 0)) == []
    assert len(action_times_between(spec, utc(2026, 1, 1), utc(2026, 2, 1), limit=4)) == 4


def test_exclusions_remove_matching_wall_clock_minutes() -> None:
    spec = ScheduleSpec(
        intervals=(every(3600),),
        exclude_crons=("* * * * SAT,SUN", "* 12 * * *"),
        time_zone="Europe/Berlin",
    )
    # Friday 2026-01-02, 22:00 UTC is 23:00 in Berlin; the weekend is Berlin's weekend.
    times = next_action_times(spec, utc(2026, 1, 2, 21), 2)
    assert times == [utc(2026, 1, 2, 22), utc(2026, 1, 4, 23)]  # then Monday 00:00 Berlin
    monday = action_times_between(spec, utc(2026, 1, 4, 22), utc(2026, 1, 5, 23))
    assert utc(2026, 1, 5, 11) not in monday  # 12:00 Berlin
    assert len(monday) == 24


def test_a_dense_interval_skips_an_excluded_weekend_quickly() -> None:
    spec = ScheduleSpec(intervals=(every(1),), exclude_crons=("* * * * SAT,SUN",))
    assert next_action_times(spec, utc(2026, 1, 2, 23, 59, 58), 3) == [
        utc(2026, 1, 2, 23, 59, 59),
        utc(2026, 1, 5),
        utc(2026, 1, 5, 0, 0, 1),
    ]


def test_exclusions_that_swallow_everything_end_the_times_instead_of_searching_for_ever() -> None:
    spec = ScheduleSpec(intervals=(every(3600),), exclude_crons=("* * * * *",))
    assert next_action_times(spec, utc(2026, 1, 1), 1) == []


# --- jitter ------------------------------------------------------------------------------------------


def test_jitter_is_deterministic_bounded_and_spread() -> None:
    jitter = timedelta(minutes=5)
    nominal = utc(2026, 1, 1, 9)
    first = jittered(jitter, "nightly-report", nominal)
    assert first == jittered(jitter, "nightly-report", nominal)  # a replay gets the same time
    assert nominal <= first < nominal + jitter
    others = {jittered(jitter, f"schedule-{n}", nominal) for n in range(50)}
    assert len(others) > 40  # schedules due at the same moment spread out
    later = {
        jittered(jitter, "nightly-report", nominal + timedelta(days=n)) - timedelta(days=n) for n in range(50)
    }
    assert len(later) > 40  # and one schedule's actions do not all land at the same offset


def test_no_jitter_is_the_nominal_time() -> None:
    nominal = utc(2026, 1, 1, 9)
    assert jittered(timedelta(0), "s", nominal) == nominal


def test_jitter_stays_before_the_next_action() -> None:
    nominal = utc(2026, 1, 1, 9)
    for n in range(100):
        actual = jittered(timedelta(hours=1), f"s{n}", nominal, next_nominal=nominal + timedelta(seconds=10))
        assert nominal <= actual < nominal + timedelta(seconds=10)


@given(
    jitter_us=st.integers(min_value=1, max_value=10**11),
    schedule_id=st.text(max_size=30),
    seconds=st.integers(min_value=0, max_value=4 * 10**9),
)
def test_jitter_is_always_in_range(jitter_us: int, schedule_id: str, seconds: int) -> None:
    nominal = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    jitter = timedelta(microseconds=jitter_us)
    actual = jittered(jitter, schedule_id, nominal)
    assert nominal <= actual < nominal + jitter
    assert actual == jittered(jitter, schedule_id, nominal)


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"crons": ["61 * * * *"]}, "cron '61 * * * *': Bad minute"),
        ({"crons": ["0 25 * * *"]}, "cron '0 25 * * *': Bad hour"),
        ({"crons": ["0 0 30 2 *"]}, "cron '0 0 30 2 *': Bad day-of-month"),
        ({"crons": ["0 0 * * FUNDAY"]}, "cron '0 0 * * FUNDAY': Bad day-of-week"),
        (
            {"crons": ["* * *"]},
            "cron '* * *': expected 5 fields (minute hour day-of-month month day-of-week), got 3",
        ),
        (
            {"crons": ["0 0 12 * * *"]},
            "cron '0 0 12 * * *': 6-field expressions (with seconds) are not supported",
        ),
        ({"exclude_crons": ["* * * 13 *"]}, "exclude_cron '* * * 13 *': Bad month"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone 'Mars/Olympus_Mons': unknown time zone"),
        ({"time_zone": "America"}, "time_zone 'America': unknown time zone"),
        ({"time_zone": ""}, "time_zone '': unknown time zone"),
        (
            {"intervals": [{"every": timedelta(0)}]},
            "interval.every '0:00:00': must be a whole number of seconds",
        ),
        ({"intervals": [{"every": timedelta(milliseconds=1500)}]}, "interval.every '0:00:01.500000'"),
        (
            {"intervals": [{"every": timedelta(minutes=1), "offset": timedelta(minutes=1)}]},
            "interval.offset '0:01:00': must be in [0, every=0:01:00)",
        ),
        ({"intervals": [{"every": 60, "offset": -1}]}, "interval.offset '-1 day, 23:59:59': must be in [0,"),
        ({"jitter": timedelta(seconds=-1)}, "jitter '-1 day, 23:59:59': must not be negative"),
        ({"start_at": datetime(2026, 1, 1)}, "start_at '2026-01-01T00:00:00': must be timezone-aware"),
        (
            {"start_at": utc(2026, 2, 1), "end_at": utc(2026, 1, 1)},
            "end_at '2026-01-01T00:00:00+00:00': must not be",
        ),
        ({"crons": [5]}, "crons.0 '5': Input should be a valid string"),
        ({"cron": ["* * * * *"]}, """cron "['* * * * *']": Extra inputs are not permitted"""),
    ],
)
def test_a_bad_spec_names_the_field_and_the_value(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleSpecError) as caught:
        ScheduleSpec(**fields)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)


def test_a_bad_interval_alone_is_a_spec_error_too() -> None:
    with pytest.raises(ScheduleSpecError, match=r"interval.every '0:00:00.500000'"):
        IntervalSpec(every=timedelta(milliseconds=500))


def test_naive_times_and_negative_limits_are_refused() -> None:
    spec = ScheduleSpec(crons=("* * * * *",))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_action_times(spec, datetime(2026, 1, 1), 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        action_times_between(spec, utc(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="not be negative"):
        next_action_times(spec, utc(2026, 1, 1), -1)
    assert next_action_times(spec, utc(2026, 1, 1), 0) == []


def test_a_spec_round_trips_through_json() -> None:
    spec = ScheduleSpec(
        crons=("30 2 * * *",),
        intervals=(every(3600, offset=60),),
        time_zone="Europe/Berlin",
        start_at=utc(2026, 1, 1),
        end_at=utc(2027, 1, 1),
        jitter=timedelta(seconds=30),
        exclude_crons=("* * 25 12 *",),
    )
    assert ScheduleSpec.model_validate_json(spec.model_dump_json()) == spec


# --- properties --------------------------------------------------------------------------------------

CRONS = [
    "*/7 * * * *",
    "30 2 * * *",
    "0 1,2,3 * * *",
    "15 */5 * * MON-FRI",
    "0 0 29 2 *",
    "0 9 L * *",
    "@hourly",
]
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]
# Around the 2026 DST changes of New York, Berlin and Lord Howe, and a leap day.
MOMENTS = [
    utc(2026, 3, 7, 20),
    utc(2026, 3, 28, 20),
    utc(2026, 10, 3, 12),
    utc(2026, 10, 24, 20),
    utc(2026, 10, 31, 20),
]


@settings(max_examples=60, deadline=None)
@given(
    crons=st.lists(st.sampled_from(CRONS), max_size=3, unique=True),
    intervals=st.lists(
        st.tuples(st.integers(min_value=1, max_value=7200), st.integers(min_value=0, max_value=7199)).map(
            lambda pair: every(pair[0], pair[1] % pair[0])
        ),
        max_size=2,
    ),
    zone=st.sampled_from(ZONES),
    moment=st.sampled_from(MOMENTS),
    shift=st.integers(min_value=0, max_value=3 * 86_400),
    bounds=st.tuples(
        st.integers(min_value=-86_400, max_value=86_400), st.integers(min_value=0, max_value=86_400)
    ),
)
def test_times_are_strictly_increasing_after_the_start_and_within_bounds(
    crons: list[str],
    intervals: list[IntervalSpec],
    zone: str,
    moment: datetime,
    shift: int,
    bounds: tuple[int, int],
) -> None:
    after = moment + timedelta(seconds=shift)
    start_at = after + timedelta(seconds=bounds[0])
    end_at = start_at + timedelta(seconds=bounds[1])
    spec = ScheduleSpec(crons=crons, intervals=intervals, time_zone=zone, start_at=start_at, end_at=end_at)
    times = next_action_times(spec, after, 50)
    assert all(earlier < later for earlier, later in pairwise(times))
    assert all(time > after and start_at <= time <= end_at and time.tzinfo is UTC for time in times)
    # The windowed view agrees with the stepping one, and windows split anywhere add up.
    if times:
        last = times[-1]
        assert action_times_between(spec, after, last) == times
        middle = after + (last - after) / 2
        assert action_times_between(spec, after, middle) + action_times_between(spec, middle, last) == times
        # Asking again from any returned time continues the same sequence: what a sleeping workflow does.
        assert next_action_times(spec, times[0], 49) == times[1:]
