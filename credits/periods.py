"""Billing-period math, in one place.

A subscription's billing period is the calendar month in its own time zone: it starts on the
1st at 00:00 local time and ends (exclusive) at the next 1st. Instants are stored in UTC;
boundaries are computed with ``zoneinfo`` so that DST changes and year ends fall where a
person in that time zone expects them.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# The local days whose billing periods (and the month before, which pages compare with) can be
# computed in every time zone: Python's dates end with the years 1 and 9999, and a period in
# either would need a day beyond them.
FIRST_PLACEABLE_DAY = date(2, 1, 1)
LAST_PLACEABLE_DAY = date(9998, 12, 31)
PLACEABLE_YEARS = f"{FIRST_PLACEABLE_DAY.year} to {LAST_PLACEABLE_DAY.year}"


def is_placeable_day(day: date) -> bool:
    return FIRST_PLACEABLE_DAY <= day <= LAST_PLACEABLE_DAY


def is_placeable(instant: datetime) -> bool:
    """Whether ``instant`` falls in a billing period the product can compute, in any time
    zone (its UTC date within the placeable days)."""
    try:
        return is_placeable_day(instant.astimezone(UTC).date())
    except OverflowError:  # before the year 1 or after 9999 in UTC
        return False


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
