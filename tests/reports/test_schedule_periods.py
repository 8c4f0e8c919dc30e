"""When scheduled reports fall due and which days they cover, in the subscription's time zone:
week and month boundaries, DST changes, a time zone far from UTC, year ends and leap years."""

from datetime import date, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from reports.schedules import latest_due, next_due
from tests.factories import utc

PRAGUE = ZoneInfo("Europe/Prague")
AUCKLAND = ZoneInfo("Pacific/Auckland")
EIGHT = time(8, 0)
MONDAY, WEDNESDAY, SUNDAY = 0, 2, 6


def weekly(now, *, zone=PRAGUE, weekday=MONDAY, at=EIGHT):
    return latest_due(frequency="weekly", weekday=weekday, send_time=at, zone=zone, now=now)


def monthly(now, *, zone=PRAGUE, at=EIGHT):
    return latest_due(frequency="monthly", weekday=MONDAY, send_time=at, zone=zone, now=now)


def days(period) -> tuple[date, date]:
    return period.first_day, period.last_day


def test_a_weekly_report_is_due_on_its_weekday_at_the_local_send_time():
    # Monday 23 November 2026, 08:00 in Prague is 07:00 UTC (CET, UTC+1).
    just_before = weekly(utc(2026, 11, 23, 6, 59))
    at_the_time = weekly(utc(2026, 11, 23, 7, 0))

    assert days(just_before) == (date(2026, 11, 9), date(2026, 11, 15))
    assert just_before.due_at == utc(2026, 11, 16, 7)
    assert days(at_the_time) == (date(2026, 11, 16), date(2026, 11, 22))
    assert at_the_time.due_at == utc(2026, 11, 23, 7)
    assert at_the_time.label == "16\N{EN DASH}22 November 2026"


def test_a_report_sent_midweek_still_covers_the_previous_monday_to_sunday():
    period = weekly(utc(2026, 11, 25, 12), weekday=WEDNESDAY)

    assert days(period) == (date(2026, 11, 16), date(2026, 11, 22))
    assert period.due_at == utc(2026, 11, 25, 7)


def test_a_monthly_report_is_due_on_the_first_and_covers_the_month_that_ended():
    assert days(monthly(utc(2026, 12, 1, 6, 59))) == (date(2026, 10, 1), date(2026, 10, 31))

    period = monthly(utc(2026, 12, 1, 7))

    assert days(period) == (date(2026, 11, 1), date(2026, 11, 30))
    assert period.due_at == utc(2026, 12, 1, 7)
    assert period.label == "November 2026"
    assert period.previous_days() == (date(2026, 10, 1), date(2026, 10, 31))


@pytest.mark.parametrize(
    ("now", "covered", "due_at"),
    [
        # Year end: 1 January 2027 08:00 CET covers December.
        (utc(2027, 1, 1, 7), (date(2026, 12, 1), date(2026, 12, 31)), utc(2027, 1, 1, 7)),
        # Leap year: February 2028 has 29 days.
        (utc(2028, 3, 1, 7), (date(2028, 2, 1), date(2028, 2, 29)), utc(2028, 3, 1, 7)),
    ],
)
def test_month_ends_at_year_end_and_in_leap_years(now, covered, due_at):
    period = monthly(now)

    assert (days(period), period.due_at) == (covered, due_at)


def test_a_week_across_the_year_end_is_labelled_with_both_years():
    period = weekly(utc(2027, 1, 4, 7))

    assert days(period) == (date(2026, 12, 28), date(2027, 1, 3))
    assert period.label == "28 December 2026 \N{EN DASH} 3 January 2027"


def test_weekly_reports_keep_their_local_time_across_both_dst_changes():
    # Prague moves to CEST (UTC+2) on Sunday 29 March 2026 and back on Sunday 25 October.
    assert weekly(utc(2026, 3, 30, 6)).due_at == utc(2026, 3, 30, 6)  # 08:00 CEST
    assert days(weekly(utc(2026, 3, 30, 6))) == (date(2026, 3, 23), date(2026, 3, 29))
    assert weekly(utc(2026, 10, 26, 7)).due_at == utc(2026, 10, 26, 7)  # 08:00 CET
    assert weekly(utc(2026, 10, 26, 6, 59)).due_at == utc(2026, 10, 19, 6)  # a week before


def test_a_send_time_inside_the_spring_forward_gap_is_sent_once_an_hour_later():
    # 02:30 does not exist in Prague on 29 March 2026: it is read as 02:30 CET, i.e. 03:30 CEST.
    period = weekly(utc(2026, 3, 29, 2), weekday=SUNDAY, at=time(2, 30))

    assert period.due_at == utc(2026, 3, 29, 1, 30)
    assert days(period) == (date(2026, 3, 16), date(2026, 3, 22))


def test_a_send_time_that_happens_twice_at_fall_back_is_the_first_one():
    # 02:30 happens twice in Prague on 25 October 2026: first in CEST (00:30 UTC).
    period = weekly(utc(2026, 10, 25, 0, 30), weekday=SUNDAY, at=time(2, 30))

    assert period.due_at == utc(2026, 10, 25, 0, 30)


def test_far_from_utc_a_monthly_report_is_due_while_it_is_still_the_last_day_in_utc():
    # 1 December 2026 08:00 in Auckland (NZDT, UTC+13) is 30 November 19:00 UTC.
    assert days(monthly(utc(2026, 11, 30, 18, 59), zone=AUCKLAND))[0] == date(2026, 10, 1)

    period = monthly(utc(2026, 11, 30, 19), zone=AUCKLAND)

    assert days(period) == (date(2026, 11, 1), date(2026, 11, 30))
    assert period.due_at == utc(2026, 11, 30, 19)


def test_far_from_utc_weekly_reports_follow_the_southern_dst_change():
    # Auckland moves from NZST (UTC+12) to NZDT (UTC+13) on Sunday 27 September 2026.
    before = weekly(utc(2026, 9, 21), zone=AUCKLAND)
    after = weekly(utc(2026, 9, 28), zone=AUCKLAND)

    assert before.due_at == utc(2026, 9, 20, 20)  # Monday 21 September 08:00 NZST
    assert after.due_at == utc(2026, 9, 27, 19)  # Monday 28 September 08:00 NZDT
    assert after.due_at - before.due_at == timedelta(days=7, hours=-1)
    assert days(after) == (date(2026, 9, 21), date(2026, 9, 27))


def test_the_next_report_is_the_first_occurrence_after_now():
    now = utc(2026, 11, 23, 7)  # a report is due exactly now

    assert next_due(frequency="weekly", weekday=MONDAY, send_time=EIGHT, zone=PRAGUE, now=now) == (
        utc(2026, 11, 30, 7)
    )
    assert next_due(
        frequency="monthly", weekday=MONDAY, send_time=EIGHT, zone=AUCKLAND, now=now
    ) == utc(2026, 11, 30, 19)
