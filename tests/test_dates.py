"""Calendar months, day boundaries in Europe/Berlin, and the injectable clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tests.builders import BERLIN
from workflows.dates import (
    FixedClock,
    add_months,
    local_date,
    month_end,
    parse_instant,
    passes_at,
    start_of_day,
)


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2025, 9, 4), 24, date(2027, 9, 4)),  # the seed story's Silver deadline
        (date(2025, 9, 4), 6, date(2026, 3, 4)),  # the seed story's Bronze deadline
        (date(2025, 1, 31), 1, date(2025, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 2, 29), 48, date(2028, 2, 29)),
        (date(2025, 3, 31), 1, date(2025, 4, 30)),
        (date(2025, 8, 31), 6, date(2026, 2, 28)),
        (date(2025, 12, 15), 1, date(2026, 1, 15)),  # over the year end
        (date(2025, 11, 30), 3, date(2026, 2, 28)),
        (date(2025, 5, 20), 0, date(2025, 5, 20)),
    ],
)
def test_add_months_counts_calendar_months_and_clamps_to_the_month_end(
    day: date, months: int, expected: date
) -> None:
    assert add_months(day, months) == expected


def test_add_months_goes_backwards_for_negative_months() -> None:
    assert add_months(date(2026, 3, 31), -1) == date(2026, 2, 28)
    assert add_months(date(2026, 1, 15), -13) == date(2024, 12, 15)


def test_clamped_month_arithmetic_is_not_reversible_on_the_31st() -> None:
    # Jan 31 + 1 = Feb 28, and Feb 28 + 1 = Mar 28: the clamp loses the day,
    # which is why validity is always counted from the original date.
    assert add_months(add_months(date(2025, 1, 31), 1), 1) == date(2025, 3, 28)
    assert add_months(date(2025, 1, 31), 2) == date(2025, 3, 31)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 11, 5), date(2026, 11, 30)),
        (date(2024, 2, 1), date(2024, 2, 29)),
        (date(2025, 2, 28), date(2025, 2, 28)),
        (date(2025, 12, 31), date(2025, 12, 31)),
    ],
)
def test_month_end_is_the_last_day_of_that_month(day: date, expected: date) -> None:
    assert month_end(day) == expected


def test_start_of_day_in_winter_is_23_00_utc_the_day_before() -> None:
    assert start_of_day(date(2026, 1, 15), BERLIN) == datetime(2026, 1, 14, 23, tzinfo=UTC)


def test_start_of_day_in_summer_is_22_00_utc_the_day_before() -> None:
    assert start_of_day(date(2026, 7, 15), BERLIN) == datetime(2026, 7, 14, 22, tzinfo=UTC)


def test_start_of_day_on_the_spring_dst_switch_day_is_still_winter_time() -> None:
    # 2026-03-29: clocks go 02:00 CET -> 03:00 CEST; midnight is still CET (+01:00).
    start = start_of_day(date(2026, 3, 29), BERLIN)
    assert start == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert start_of_day(date(2026, 3, 30), BERLIN) == datetime(2026, 3, 29, 22, tzinfo=UTC)
    # That day has only 23 hours.
    assert start_of_day(date(2026, 3, 30), BERLIN) - start == timedelta(hours=23)


def test_start_of_day_on_the_autumn_dst_switch_day_is_still_summer_time() -> None:
    # 2026-10-25: clocks go 03:00 CEST -> 02:00 CET; midnight is still CEST (+02:00).
    start = start_of_day(date(2026, 10, 25), BERLIN)
    assert start == datetime(2026, 10, 24, 22, tzinfo=UTC)
    assert start_of_day(date(2026, 10, 26), BERLIN) == datetime(2026, 10, 25, 23, tzinfo=UTC)
    # That day has 25 hours.
    assert start_of_day(date(2026, 10, 26), BERLIN) - start == timedelta(hours=25)


def test_start_of_day_returns_an_aware_utc_instant() -> None:
    start = start_of_day(date(2025, 9, 4), BERLIN)
    assert start.tzinfo is UTC
    assert start.astimezone(BERLIN).replace(tzinfo=None) == datetime(2025, 9, 4)


def test_a_due_date_passes_at_the_start_of_the_next_day_in_berlin() -> None:
    # Bronze due 2026-03-04 (winter): passes at 2026-03-05 00:00 CET = 03-04 23:00 UTC.
    assert passes_at(date(2026, 3, 4), BERLIN) == datetime(2026, 3, 4, 23, tzinfo=UTC)
    # Silver due 2027-09-04 (summer): passes at 2027-09-05 00:00 CEST = 09-04 22:00 UTC.
    assert passes_at(date(2027, 9, 4), BERLIN) == datetime(2027, 9, 4, 22, tzinfo=UTC)


def test_a_due_date_the_day_before_a_dst_switch_passes_at_local_midnight() -> None:
    assert passes_at(date(2026, 3, 28), BERLIN) == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert passes_at(date(2026, 3, 29), BERLIN) == datetime(2026, 3, 29, 22, tzinfo=UTC)
    assert passes_at(date(2026, 10, 24), BERLIN) == datetime(2026, 10, 24, 22, tzinfo=UTC)
    assert passes_at(date(2026, 10, 25), BERLIN) == datetime(2026, 10, 25, 23, tzinfo=UTC)


def test_a_due_date_is_still_open_one_microsecond_before_it_passes() -> None:
    due = date(2026, 3, 4)
    last_moment = passes_at(due, BERLIN) - timedelta(microseconds=1)
    assert local_date(last_moment, BERLIN) == due
    assert local_date(passes_at(due, BERLIN), BERLIN) == due + timedelta(days=1)


def test_local_date_of_a_late_utc_evening_is_the_next_berlin_day() -> None:
    assert local_date(datetime(2026, 7, 14, 22, 30, tzinfo=UTC), BERLIN) == date(2026, 7, 15)
    assert local_date(datetime(2026, 7, 14, 21, 59, tzinfo=UTC), BERLIN) == date(2026, 7, 14)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-09-10T00:00:00Z", datetime(2027, 9, 10, tzinfo=UTC)),
        ("2027-09-10T02:00:00+02:00", datetime(2027, 9, 10, tzinfo=UTC)),
        ("2027-09-10", datetime(2027, 9, 10, tzinfo=UTC)),
        ("2027-09-10T08:15:00", datetime(2027, 9, 10, 8, 15, tzinfo=UTC)),
    ],
)
def test_parse_instant_reads_rfc3339_and_treats_naive_input_as_utc(
    text: str, expected: datetime
) -> None:
    parsed = parse_instant(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


def test_fixed_clock_stands_still_until_moved() -> None:
    clock = FixedClock(datetime(2026, 1, 1, 1, tzinfo=BERLIN))
    assert clock.now() == datetime(2026, 1, 1, 0, tzinfo=UTC)
    assert clock.now() == clock.now()
    clock.advance(timedelta(days=2))
    assert clock.now() == datetime(2026, 1, 3, 0, tzinfo=UTC)
    clock.set(datetime(2027, 9, 10, tzinfo=UTC))
    assert clock.now() == datetime(2027, 9, 10, tzinfo=UTC)
    assert clock.now().tzinfo is UTC
