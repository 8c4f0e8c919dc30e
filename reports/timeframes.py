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

The usage pages show one billing period (``Cycle``) at a time and the days chosen within it
(``DateRange``, ``period=YYYY-MM&from=YYYY-MM-DD&to=YYYY-MM-DD``); ``date_range_from`` parses
them with the API's parsers but says what was wrong on the page instead of refusing. Either
way, what a usage query reads is a ``Timeframe``.
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
# The usage pages show one billing period at a time: its month and the days shown within it.
# Their links (emails' included) and forms keep these names; the values parse as the API's.
DATE_RANGE_PARAMETERS = ("period", "from", "to")
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


class PeriodNotStarted(InvalidTimeframe):
    """A billing period after the current one: the API refuses it like any invalid timeframe,
    the pages say so and show the current period."""


def parse_period(value: str, *, zone: ZoneInfo, now: datetime) -> date:
    """The first day of the billing period ``YYYY-MM``, the current one or a past one."""
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
        raise PeriodNotStarted(
            "A period is the current billing period or a past one.", parameter="period"
        )
    return month


def parse_day(value: str, *, parameter: str) -> date:
    """A local date, ``YYYY-MM-DD``, in the years the periods can be placed in."""
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidTimeframe(
            f"Give {parameter} as a date, YYYY-MM-DD (start and end go together).",
            parameter=parameter,
        ) from None
    if not is_placeable_day(day):
        raise InvalidTimeframe(
            f"Give {parameter} as a date in the years {PLACEABLE_YEARS}.", parameter=parameter
        )
    return day


def _period(value: str, *, zone: ZoneInfo, now: datetime) -> Timeframe:
    return billing_period(month=parse_period(value, zone=zone, now=now), zone=zone)


def _custom(start: str, end: str, *, zone: ZoneInfo) -> Timeframe:
    days = {
        parameter: parse_day(value, parameter=parameter)
        for parameter, value in (("start", start), ("end", end))
    }
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


# --- Cycles and date ranges -----------------------------------------------------------------


@dataclass(frozen=True)
class Cycle:
    """One billing period in the subscription's local dates."""

    subscription: Subscription
    first_day: date
    today: date

    @property
    def reset_day(self) -> date:
        return next_month_start(self.first_day)

    @property
    def last_day(self) -> date:
        return self.reset_day - timedelta(days=1)

    @property
    def is_current(self) -> bool:
        return self.first_day <= self.today <= self.last_day

    @property
    def last_elapsed_day(self) -> date:
        return min(self.today, self.last_day)

    @property
    def elapsed_day_count(self) -> int:
        return max(0, (self.last_elapsed_day - self.first_day).days + 1)

    @property
    def start(self) -> datetime:
        return local_midnight(self.first_day, self.subscription.zone)

    @property
    def month(self) -> str:
        return f"{self.first_day:%Y-%m}"

    @property
    def timeframe(self) -> Timeframe:
        return billing_period(month=self.first_day, zone=self.subscription.zone)

    def previous(self) -> "Cycle":
        return Cycle(self.subscription, previous_month_start(self.first_day), self.today)


@dataclass(frozen=True)
class Preset:
    key: str  # the ``range`` query parameter that marks it chosen
    label: str
    first_day: date
    last_day: date
    selected: bool


@dataclass(frozen=True)
class DateRange:
    """The days of one cycle that a page shows (the whole cycle unless a range was chosen).

    ``chosen`` is the quick range the person clicked (``range=last_14_days``), if any.
    """

    cycle: Cycle
    first_day: date
    last_day: date
    chosen: str = ""

    @property
    def days(self) -> list[date]:
        return days_between(self.first_day, self.last_day)

    @property
    def elapsed_days(self) -> list[date]:
        return days_between(self.first_day, min(self.last_day, self.cycle.today))

    @property
    def is_whole_cycle(self) -> bool:
        return (self.first_day, self.last_day) == (self.cycle.first_day, self.cycle.last_day)

    @property
    def timeframe(self) -> Timeframe:
        """The days shown as a timeframe of the reports (what a usage query reads)."""
        return days_timeframe(
            name="custom",
            first_day=self.first_day,
            last_day=self.last_day,
            zone=self.cycle.subscription.zone,
        )

    @property
    def start(self) -> datetime:
        return self.timeframe.start

    @property
    def end(self) -> datetime:
        return self.timeframe.end

    @property
    def presets(self) -> list[Preset]:
        """The quick ranges, each inside the cycle like every range of the page.

        "Last 7 days" and "Last 14 days" end on the cycle's last elapsed day and start at most
        6 (13) days earlier, never before the cycle's 1st: on the 3rd of the current month
        both are the 1st to the 3rd, the period so far. At most one is marked, even when
        several cover the shown days: the one clicked (``range``), else the narrowest.
        """
        cycle = self.cycle
        last = cycle.last_elapsed_day
        choices = [
            ("whole_period", "Whole period", cycle.first_day, cycle.last_day),
            ("last_7_days", "Last 7 days", max(cycle.first_day, last - timedelta(days=6)), last),
            ("last_14_days", "Last 14 days", max(cycle.first_day, last - timedelta(days=13)), last),
            ("last_day", "Today" if cycle.is_current else "Last day", last, last),
        ]
        shown = (self.first_day, self.last_day)
        matching = [key for key, _, first, final in choices if (first, final) == shown]
        narrowest_first = ("last_day", "last_7_days", "last_14_days", "whole_period")
        selected = (
            self.chosen
            if self.chosen in matching
            else next((key for key in narrowest_first if key in matching), None)
        )
        return [
            Preset(key, label, first, final, key == selected)
            for key, label, first, final in choices
        ]


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def date_range_from(
    *, subscription: Subscription, query: Mapping[str, str], now: datetime
) -> tuple[DateRange, list[str]]:
    """The date range that ``query`` asks for (``period=YYYY-MM``, ``from``/``to`` dates),
    parsed by the API's own parsers (``parse_period``, ``parse_day``).

    Defaults to the whole current billing period. A past period can be looked back at, a
    future one cannot; a range is clipped to its period. Returns the range and what was
    wrong with the query, for the page to say.
    """
    problems = []
    today = local_date(now, subscription.zone)
    current = Cycle(subscription, today.replace(day=1), today)
    cycle = current
    if query.get("period"):
        try:
            cycle = Cycle(
                subscription, parse_period(query["period"], zone=subscription.zone, now=now), today
            )
        except PeriodNotStarted:
            problems.append("That billing period has not started yet; showing the current one.")
        except InvalidTimeframe:
            problems.append("The billing period must be a month such as 2026-11.")
    days = {}
    for name in ("from", "to"):
        if not query.get(name):
            continue
        try:
            days[name] = parse_day(query[name], parameter=name)
        except InvalidTimeframe:
            problems.append(
                f"“{query[name]}” is not a date in the years {PLACEABLE_YEARS} (use YYYY-MM-DD)."
            )
    first, last = days.get("from"), days.get("to")
    first = first or cycle.first_day
    last = last or cycle.last_day
    if first > last:
        problems.append("The range ended before it started; showing the whole period.")
        first, last = cycle.first_day, cycle.last_day
    if last < cycle.first_day or first > cycle.last_day:
        # A range left over from another period (e.g. after choosing a new period).
        first, last = cycle.first_day, cycle.last_day
    first, last = max(first, cycle.first_day), min(last, cycle.last_day)
    return DateRange(cycle, first, last, chosen=query.get("range") or ""), problems
