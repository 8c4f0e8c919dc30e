"""Billing-period math, in one place.

A subscription's billing period is the calendar month in its own time zone: it starts on the
1st at 00:00 local time and ends (exclusive) at the next 1st. Instants are stored in UTC;
boundaries are computed with ``zoneinfo`` so that DST changes and year ends fall where a
person in that time zone expects them.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Bounds:
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month_start(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous_month_start(day: date) -> date:
    return (day.replace(day=1) - timedelta(days=1)).replace(day=1)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """00:00 of ``day`` in ``zone`` as a UTC instant."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def month_bounds(first_day: date, zone: ZoneInfo) -> Bounds:
    return Bounds(
        local_midnight(first_day, zone), local_midnight(next_month_start(first_day), zone)
    )


def period_bounds(instant: datetime, zone: ZoneInfo) -> Bounds:
    """The billing period containing ``instant``."""
    return month_bounds(month_start(local_date(instant, zone)), zone)


def periods_through(since: datetime, until: datetime, zone: ZoneInfo) -> list[Bounds]:
    """The billing periods from the one containing ``since`` through the one containing
    ``until``, in order (just the latter when ``since`` is later)."""
    month = month_start(local_date(min(since, until), zone))
    last = month_start(local_date(until, zone))
    periods = []
    while month <= last:
        periods.append(month_bounds(month, zone))
        month = next_month_start(month)
    return periods


def next_reset(instant: datetime, zone: ZoneInfo) -> datetime:
    return period_bounds(instant, zone).end


def days_until_reset(instant: datetime, zone: ZoneInfo) -> int:
    """Whole local days from today until the reset date (the 1st of next month)."""
    today = local_date(instant, zone)
    return (next_month_start(today) - today).days
