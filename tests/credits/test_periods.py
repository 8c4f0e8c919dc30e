"""Billing periods are calendar months in the subscription's time zone."""

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from credits.periods import days_until_reset, next_reset, period_bounds, periods_through
from tests.factories import utc

PRAGUE = ZoneInfo("Europe/Prague")
AUCKLAND = ZoneInfo("Pacific/Auckland")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("instant", "zone", "start", "end"),
    [
        # 23:30 UTC on 31 Jan is already 1 Feb in Prague.
        (utc(2026, 1, 31, 23, 30), PRAGUE, utc(2026, 1, 31, 23), utc(2026, 2, 28, 23)),
        # Prague's March period spans the switch to summer time (end is at UTC+2).
        (utc(2026, 3, 15), PRAGUE, utc(2026, 2, 28, 23), utc(2026, 3, 31, 22)),
        # Year end in Auckland (UTC+13 in summer): New Year arrives at 11:00 UTC on 31 Dec.
        (utc(2026, 12, 31, 11), AUCKLAND, utc(2026, 12, 31, 11), utc(2027, 1, 31, 11)),
        (utc(2026, 12, 31, 10, 59), AUCKLAND, utc(2026, 11, 30, 11), utc(2026, 12, 31, 11)),
        # November in New York spans the end of daylight saving time.
        (utc(2026, 11, 15), NEW_YORK, utc(2026, 11, 1, 4), utc(2026, 12, 1, 5)),
        # Leap year February.
        (utc(2028, 2, 29, 12), ZoneInfo("UTC"), utc(2028, 2, 1), utc(2028, 3, 1)),
    ],
)
def test_period_bounds(instant, zone, start, end):
    bounds = period_bounds(instant, zone)

    assert (bounds.start, bounds.end) == (start, end)


def test_next_reset_and_days_until_reset_count_local_days():
    last_minute = utc(2026, 11, 30, 22, 59)  # 23:59 on 30 Nov in Prague

    assert next_reset(last_minute, PRAGUE) == utc(2026, 11, 30, 23)
    assert days_until_reset(last_minute, PRAGUE) == 1
    assert (
        days_until_reset(utc(2026, 11, 30, 23), PRAGUE)
        == date(2027, 1, 1).toordinal() - date(2026, 12, 1).toordinal()
    )


def test_periods_through_lists_each_local_month_across_dst_and_the_year_end():
    # Auckland: New Year at 11:00 UTC on 31 Dec (UTC+13), standard time (UTC+12) from 4 April.
    periods = periods_through(utc(2026, 11, 20), utc(2027, 4, 10), AUCKLAND)

    assert [(bounds.start, bounds.end) for bounds in periods] == [
        (utc(2026, 10, 31, 11), utc(2026, 11, 30, 11)),
        (utc(2026, 11, 30, 11), utc(2026, 12, 31, 11)),
        (utc(2026, 12, 31, 11), utc(2027, 1, 31, 11)),
        (utc(2027, 1, 31, 11), utc(2027, 2, 28, 11)),
        (utc(2027, 2, 28, 11), utc(2027, 3, 31, 11)),
        (utc(2027, 3, 31, 11), utc(2027, 4, 30, 12)),
    ]


def test_periods_through_a_later_start_is_just_the_last_period():
    assert periods_through(utc(2026, 6, 1), utc(2026, 3, 15), PRAGUE) == [
        period_bounds(utc(2026, 3, 15), PRAGUE)
    ]
