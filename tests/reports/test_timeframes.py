"""Timeframes are whole local days in the subscription's time zone, weeks start on Monday."""

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from accounts.models import Subscription
from reports.timeframes import (
    TIMEFRAMES,
    InvalidTimeframe,
    current_billing_period,
    named_timeframe,
    resolve_timeframe,
)
from tests.factories import utc

AUCKLAND = ZoneInfo("Pacific/Auckland")
# Wednesday 25 November 2026, 09:00 in Auckland (UTC+13), while it is still Tuesday in UTC.
NOW = utc(2026, 11, 24, 20)


def auckland() -> Subscription:
    return Subscription(name="Kiwi", timezone="Pacific/Auckland")


@pytest.mark.parametrize(
    ("name", "first_day", "last_day"),
    [
        ("this_week", date(2026, 11, 23), date(2026, 11, 25)),
        ("this_month", date(2026, 11, 1), date(2026, 11, 25)),
        ("last_week", date(2026, 11, 16), date(2026, 11, 22)),
        ("last_month", date(2026, 10, 1), date(2026, 10, 31)),
        ("last_7_days", date(2026, 11, 19), date(2026, 11, 25)),
        ("last_30_days", date(2026, 10, 27), date(2026, 11, 25)),
        ("last_3_months", date(2026, 9, 1), date(2026, 11, 25)),
        ("last_6_months", date(2026, 6, 1), date(2026, 11, 25)),
        ("last_12_months", date(2025, 12, 1), date(2026, 11, 25)),
    ],
)
def test_named_timeframes_are_local_days(name, first_day, last_day):
    timeframe = named_timeframe(name=name, zone=AUCKLAND, now=NOW)

    assert (timeframe.first_day, timeframe.last_day) == (first_day, last_day)
    assert timeframe.days == (last_day - first_day).days + 1


def test_instants_are_local_midnights_in_utc():
    this_week = named_timeframe(name="this_week", zone=AUCKLAND, now=NOW)

    # 00:00 on Monday 23 November NZDT (UTC+13) up to 00:00 on Thursday 26 November.
    assert (this_week.start, this_week.end) == (utc(2026, 11, 22, 11), utc(2026, 11, 25, 11))
    assert this_week.timezone == "Pacific/Auckland"


def test_last_month_in_january_is_the_previous_december():
    new_year = utc(2027, 1, 1, 0)  # 13:00 on 1 January in Auckland

    last_month = named_timeframe(name="last_month", zone=AUCKLAND, now=new_year)
    last_week = named_timeframe(name="last_week", zone=AUCKLAND, now=new_year)

    assert (last_month.first_day, last_month.last_day) == (date(2026, 12, 1), date(2026, 12, 31))
    assert (last_month.start, last_month.end) == (utc(2026, 11, 30, 11), utc(2026, 12, 31, 11))
    assert (last_week.first_day, last_week.last_day) == (date(2026, 12, 21), date(2026, 12, 27))


def test_a_week_starts_on_monday_even_on_sunday():
    sunday = utc(2026, 11, 29, 1)  # 14:00 on Sunday 29 November in Auckland

    this_week = named_timeframe(name="this_week", zone=AUCKLAND, now=sunday)

    assert (this_week.first_day, this_week.last_day) == (date(2026, 11, 23), date(2026, 11, 29))


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        # Daylight saving time ends on 5 April: the period starts at UTC+13 and ends at UTC+12.
        ("2026-04", utc(2026, 3, 31, 11), utc(2026, 4, 30, 12)),
        # ... and starts again on 27 September.
        ("2026-09", utc(2026, 8, 31, 12), utc(2026, 9, 30, 11)),
        # The current period is a whole month, to its end.
        ("2026-11", utc(2026, 10, 31, 11), utc(2026, 11, 30, 11)),
    ],
)
def test_a_period_is_a_whole_billing_period(period, start, end):
    timeframe = resolve_timeframe(subscription=auckland(), params={"period": period}, now=NOW)

    assert (timeframe.name, timeframe.start, timeframe.end) == ("period", start, end)
    assert timeframe.label == period


def test_the_current_billing_period_is_the_whole_month():
    timeframe = current_billing_period(subscription=auckland(), now=NOW)

    assert (timeframe.first_day, timeframe.last_day) == (date(2026, 11, 1), date(2026, 11, 30))


def test_start_and_end_are_local_dates_both_included():
    timeframe = resolve_timeframe(
        subscription=auckland(), params={"start": "2026-04-05", "end": "2026-04-05"}, now=NOW
    )

    # 5 April is 25 hours long in Auckland: 00:00 NZDT to 00:00 NZST the next day.
    assert (timeframe.start, timeframe.end) == (utc(2026, 4, 4, 11), utc(2026, 4, 5, 12))
    assert (timeframe.name, timeframe.days) == ("custom", 1)
    assert timeframe.label == "2026-04-05_2026-04-05"


def test_a_sub_account_in_another_zone_gets_the_same_local_days():
    timeframe = named_timeframe(name="last_month", zone=AUCKLAND, now=NOW)

    bounds = timeframe.bounds_in(ZoneInfo("America/New_York"))

    assert (bounds.start, bounds.end) == (utc(2026, 10, 1, 4), utc(2026, 11, 1, 4))


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({}, "timeframe"),
        ({"timeframe": ""}, "timeframe"),
        ({"timeframe": "yesterday"}, "timeframe"),
        ({"timeframe": "last_5_days"}, "timeframe"),
        ({"timeframe": "this_month", "period": "2026-10"}, "timeframe"),
        ({"period": "2026-10", "start": "2026-10-01"}, "period"),
        ({"period": "2026-13"}, "period"),
        ({"period": "26-01"}, "period"),
        ({"period": "2026-1"}, "period"),
        ({"period": "2026-12"}, "period"),  # the future
        ({"start": "2026-10-01"}, "end"),
        ({"end": "2026-10-01"}, "start"),
        ({"start": "2026-02-30", "end": "2026-03-01"}, "start"),
        ({"start": "20261001", "end": "20261002"}, "start"),
        ({"start": "2026-10-02", "end": "2026-10-01"}, "start"),
        ({"start": "2024-01-01", "end": "2025-01-01"}, "end"),  # 367 days: 366 is the most
        ({"start": "0001-01-01", "end": "0001-01-02"}, "start"),
    ],
)
def test_bad_timeframes_are_refused_listing_the_allowed_names(params, parameter):
    with pytest.raises(InvalidTimeframe) as refused:
        resolve_timeframe(subscription=auckland(), params=params, now=NOW)

    assert refused.value.code == "invalid_timeframe"
    assert refused.value.details == {"allowed": list(TIMEFRAMES), "parameter": parameter}
