"""When scheduled reports fall due, and which period each covers: the one module for this math.

Times are the subscription's local time (``zoneinfo``); instants are UTC.

* **Weekly**: due on the schedule's weekday at its send time, covering the previous Monday to
  Sunday (a Monday 08:00 report covers the seven days that ended at midnight; a Wednesday one
  still covers Monday to Sunday of the week before).
* **Monthly**: due on the 1st at the send time, covering the calendar month that just ended,
  which is the billing period that just closed.

``latest_due`` is the most recent occurrence at or before an instant. Beat asks every few
minutes, so a report goes out within minutes of its time; a beat that was down asks later and
still gets the occurrence it missed (and only the latest one, once: the dispatch claims it).

DST: a send time that does not exist on a spring-forward day (02:30 in Europe/Prague on the
last Sunday of March) is read with the offset in force before the change, i.e. an hour later
on the new clock; one that happens twice on a fall-back day is the first of the two. Either
way each occurrence has exactly one instant.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from credits.periods import local_date, month_start, next_month_start, previous_month_start

DASH = "\N{EN DASH}"
WEEKLY = "weekly"
MONTHLY = "monthly"


@dataclass(frozen=True)
class ReportPeriod:
    frequency: str
    first_day: date  # local, included
    last_day: date  # local, included
    due_at: datetime  # UTC: when the report of this period is sent

    @property
    def label(self) -> str:
        """``16-22 November 2026``, ``28 December 2026 - 3 January 2027`` or ``November 2026``
        (with en dashes)."""
        first, last = self.first_day, self.last_day
        if self.frequency == MONTHLY:
            return f"{first:%B %Y}"
        if first.year != last.year:
            return f"{first.day} {first:%B %Y} {DASH} {last.day} {last:%B %Y}"
        if first.month != last.month:
            return f"{first.day} {first:%B} {DASH} {last.day} {last:%B %Y}"
        return f"{first.day}{DASH}{last.day} {last:%B %Y}"

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=n) for n in range(self.day_count)]

    @property
    def day_count(self) -> int:
        return (self.last_day - self.first_day).days + 1

    def previous_days(self) -> tuple[date, date]:
        """The first and last day of the period before, for the trend."""
        if self.frequency == WEEKLY:
            week = timedelta(days=7)
            return self.first_day - week, self.last_day - week
        return previous_month_start(self.first_day), self.first_day - timedelta(days=1)


def send_instant(day: date, send_time: time, zone: ZoneInfo) -> datetime:
    """``send_time`` on the local ``day`` as a UTC instant (see the module docstring for DST)."""
    return datetime.combine(day, send_time, tzinfo=zone).astimezone(UTC)


def latest_due(
    *, frequency: str, weekday: int, send_time: time, zone: ZoneInfo, now: datetime
) -> ReportPeriod:
    """The most recent report due at or before ``now``."""
    today = local_date(now, zone)
    if frequency == WEEKLY:
        send_day = today - timedelta(days=(today.weekday() - weekday) % 7)
        if send_instant(send_day, send_time, zone) > now:
            send_day -= timedelta(days=7)
        monday = send_day - timedelta(days=send_day.weekday() + 7)
        return ReportPeriod(
            WEEKLY,
            monday,
            monday + timedelta(days=6),
            send_instant(send_day, send_time, zone),
        )
    send_day = month_start(today)
    if send_instant(send_day, send_time, zone) > now:
        send_day = previous_month_start(send_day)
    first_day = previous_month_start(send_day)
    return ReportPeriod(
        MONTHLY,
        first_day,
        next_month_start(first_day) - timedelta(days=1),
        send_instant(send_day, send_time, zone),
    )


def next_due(
    *, frequency: str, weekday: int, send_time: time, zone: ZoneInfo, now: datetime
) -> datetime:
    """When the next report after ``now`` is due (UTC)."""
    today = local_date(now, zone)
    if frequency == WEEKLY:
        send_day = today + timedelta(days=(weekday - today.weekday()) % 7)
        if send_instant(send_day, send_time, zone) <= now:
            send_day += timedelta(days=7)
        return send_instant(send_day, send_time, zone)
    send_day = month_start(today)
    if send_instant(send_day, send_time, zone) <= now:
        send_day = next_month_start(send_day)
    return send_instant(send_day, send_time, zone)
