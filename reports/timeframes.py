"""Timeframes of the usage reports: named ranges, billing periods and custom dates.

A timeframe is a range of whole **local days** in the subscription's time zone, first and last
day included; its ``start`` and ``end`` are the UTC instants of 00:00 local on the first day and
on the day after the last (``end`` exclusive), so DST changes and year ends fall where a person
in that time zone expects them. "Today" is the local date of the request.

Named timeframes (weeks start on Monday):

* ``this_week``: Monday of the current week through today.
* ``this_month``: the 1st of the current month through today (the current billing period to
  date).
* ``last_week``: Monday through Sunday of the week before the current one.
* ``last_month``: the whole previous calendar month (the previous billing period).
* ``last_7_days`` and ``last_30_days``: the 7 (or 30) local days ending today, today
  included; ``last_7_days`` on a Wednesday is the Thursday before through that Wednesday.
* ``last_3_months``, ``last_6_months`` and ``last_12_months``: the current billing period to
  date and the 2 (5, 11) whole billing periods before it; ``last_3_months`` on 23 November is
  1 September through 23 November.

Instead of a name, ``period=YYYY-MM`` is one whole billing period (the current one or a past
one), and ``start=YYYY-MM-DD&end=YYYY-MM-DD`` any range of at most 366 local days.

Sub-accounts can live in other time zones: the same local days are then each account's own
(``bounds_in``), just as each account's billing periods are its own calendar months.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone

from accounts.models import Subscription
from core.errors import DomainError
from credits.periods import (
    PLACEABLE_YEARS,
    Bounds,
    is_placeable_day,
    local_date,
    local_midnight,
    month_start,
    next_month_start,
    previous_month_start,
)

TIMEFRAMES = (
    "this_week",
    "this_month",
    "last_week",
    "last_month",
    "last_7_days",
    "last_30_days",
    "last_3_months",
    "last_6_months",
    "last_12_months",
)
TIMEFRAME_PARAMETERS = ("timeframe", "period", "start", "end")
MAX_CUSTOM_DAYS = 366
_DAYS = {"last_7_days": 7, "last_30_days": 30}
_MONTHS = {"last_3_months": 3, "last_6_months": 6, "last_12_months": 12}

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidTimeframe(DomainError):
    code = "invalid_timeframe"
    message = (
        "Choose a timeframe: timeframe=<one of the allowed values>, or period=YYYY-MM, "
        "or start=YYYY-MM-DD and end=YYYY-MM-DD."
    )

    def __init__(self, message: str | None = None, **details):
        super().__init__(message, allowed=list(TIMEFRAMES), **details)


@dataclass(frozen=True)
class Timeframe:
    name: str  # a name from TIMEFRAMES, "period" or "custom"
    first_day: date  # local, included
    last_day: date  # local, included
    start: datetime  # UTC, included: 00:00 local on first_day
    end: datetime  # UTC, excluded: 00:00 local on the day after last_day
    timezone: str

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def label(self) -> str:
        """For file names: ``2026-10`` for one whole month, else ``2026-10-01_2026-10-15``."""
        if self.first_day.day == 1 and self.last_day + timedelta(days=1) == next_month_start(
            self.first_day
        ):
            return f"{self.first_day:%Y-%m}"
        return f"{self.first_day:%Y-%m-%d}_{self.last_day:%Y-%m-%d}"

    def bounds_in(self, zone: ZoneInfo) -> Bounds:
        """The same local days in another time zone (a sub-account's), as UTC instants."""
        return _day_bounds(self.first_day, self.last_day, zone)


def _day_bounds(first_day: date, last_day: date, zone: ZoneInfo) -> Bounds:
    return Bounds(
        local_midnight(first_day, zone), local_midnight(last_day + timedelta(days=1), zone)
    )


def days_timeframe(*, name: str, first_day: date, last_day: date, zone: ZoneInfo) -> Timeframe:
    """The local days ``first_day`` through ``last_day`` in ``zone``."""
    bounds = _day_bounds(first_day, last_day, zone)
    return Timeframe(name, first_day, last_day, bounds.start, bounds.end, zone.key)


def named_timeframe(*, name: str, zone: ZoneInfo, now: datetime) -> Timeframe:
    """One of ``TIMEFRAMES`` as seen at ``now`` (see the module docstring)."""
    if name not in TIMEFRAMES:
        raise InvalidTimeframe(f"Unknown timeframe {name!r}.", parameter="timeframe")
    today = local_date(now, zone)
    monday = today - timedelta(days=today.weekday())
    first_day, last_day = month_start(today), today
    if name == "this_week":
        first_day = monday
    elif name == "last_week":
        first_day, last_day = monday - timedelta(days=7), monday - timedelta(days=1)
    elif name == "last_month":
        first_day, last_day = previous_month_start(today), month_start(today) - timedelta(days=1)
    elif name in _DAYS:
        first_day = today - timedelta(days=_DAYS[name] - 1)
    elif name in _MONTHS:
        for _ in range(_MONTHS[name] - 1):
            first_day = previous_month_start(first_day)
    return days_timeframe(name=name, first_day=first_day, last_day=last_day, zone=zone)


def billing_period(*, month: date, zone: ZoneInfo) -> Timeframe:
    """The whole billing period (calendar month) containing the local date ``month``."""
    first_day = month_start(month)
    last_day = next_month_start(first_day) - timedelta(days=1)
    return days_timeframe(name="period", first_day=first_day, last_day=last_day, zone=zone)


def current_billing_period(*, subscription: Subscription, now: datetime | None = None) -> Timeframe:
    zone = subscription.zone
    return billing_period(month=local_date(now or timezone.now(), zone), zone=zone)


def resolve_timeframe(
    *, subscription: Subscription, params: Mapping[str, str], now: datetime | None = None
) -> Timeframe:
    """The timeframe a request asks for with exactly one of ``timeframe=<name>``,
    ``period=YYYY-MM`` or ``start``/``end`` dates, in the subscription's time zone.

    Anything missing, unknown, malformed or contradictory raises ``InvalidTimeframe``, whose
    details list the allowed names.
    """
    zone = subscription.zone
    now = now or timezone.now()
    given = [name for name in TIMEFRAME_PARAMETERS if params.get(name)]
    if not given:
        raise InvalidTimeframe("A timeframe is required.", parameter="timeframe")
    if len(given) > 1 and set(given) != {"start", "end"}:
        raise InvalidTimeframe(
            "Give only one of timeframe, period, or start and end.", parameter=given[0]
        )
    if "timeframe" in given:
        return named_timeframe(name=params["timeframe"], zone=zone, now=now)
    if "period" in given:
        return _period(params["period"], zone=zone, now=now)
    return _custom(params.get("start", ""), params.get("end", ""), zone=zone)


def _period(value: str, *, zone: ZoneInfo, now: datetime) -> Timeframe:
    match = _PERIOD.fullmatch(value)
    if match is None:
        raise InvalidTimeframe("A period is a month, YYYY-MM.", parameter="period")
    try:
        month = date(int(match[1]), int(match[2]), 1)
    except ValueError:  # the year 0
        month = None
    if month is None or not is_placeable_day(month):
        raise InvalidTimeframe(
            f"A period is a month in the years {PLACEABLE_YEARS}.", parameter="period"
        )
    if month > local_date(now, zone):
        raise InvalidTimeframe(
            "A period is the current billing period or a past one.", parameter="period"
        )
    return billing_period(month=month, zone=zone)


def _custom(start: str, end: str, *, zone: ZoneInfo) -> Timeframe:
    days = {}
    for parameter, value in (("start", start), ("end", end)):
        try:
            if not _DATE.fullmatch(value):
                raise ValueError
            days[parameter] = date.fromisoformat(value)
        except ValueError:
            raise InvalidTimeframe(
                f"Give {parameter} as a date, YYYY-MM-DD (start and end go together).",
                parameter=parameter,
            ) from None
        if not is_placeable_day(days[parameter]):
            raise InvalidTimeframe(
                f"Give {parameter} as a date in the years {PLACEABLE_YEARS}.", parameter=parameter
            )
    if days["start"] > days["end"]:
        raise InvalidTimeframe("start is after end.", parameter="start")
    if (days["end"] - days["start"]).days >= MAX_CUSTOM_DAYS:
        raise InvalidTimeframe(
            f"A custom timeframe spans at most {MAX_CUSTOM_DAYS} days.", parameter="end"
        )
    try:
        return days_timeframe(
            name="custom", first_day=days["start"], last_day=days["end"], zone=zone
        )
    except OverflowError:
        raise InvalidTimeframe("These dates are out of range.", parameter="start") from None
