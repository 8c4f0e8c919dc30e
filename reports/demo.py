"""The demo's scheduled reports: a weekly and a monthly one, whose latest report is due.

Added by ``seed_demo`` (on ``credits.signals.demo_seeded``), once. They are dated as if Alice
had set them up when the demo's history starts, so the report of the last week and of the last
month fell due while they were active: the first seed claims them and queues their emails at
commit, and the worker sends them when the demo starts (to ``var/sent-emails``).
"""

from dataclasses import dataclass
from datetime import datetime, time

from .catalogue import CREDIT_USAGE_EXPORT
from .models import ReportSchedule, Weekday
from .tasks import dispatch_reports

SUBSCRIPTION = "Acme Corp"
OWNER = "alice@acme.example"


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    frequency: str
    recipients: tuple[str, ...]
    attached_reports: tuple[str, ...]


SCHEDULES = (
    ScheduleSpec(
        "Weekly AI usage",
        ReportSchedule.Frequency.WEEKLY,
        (OWNER, "bob@acme.example"),
        ("usage-by-user", "usage-by-agent", "usage-by-team"),
    ),
    ScheduleSpec(
        "Monthly credits for finance",
        ReportSchedule.Frequency.MONTHLY,
        (OWNER, "finance@acme.example"),
        ("usage-by-product", "usage-by-sub-account", CREDIT_USAGE_EXPORT),
    ),
)


def seed_report_schedules(sender, *, world, now: datetime, **kwargs) -> list[str]:
    """Create the demo's schedules that are missing; when any is new, hand the reports due to
    the sender (as beat's dispatch would). Returns what it did, for ``seed_demo`` to print."""
    subscription = world.subscriptions[SUBSCRIPTION]
    created = []
    for spec in SCHEDULES:
        if ReportSchedule.objects.filter(subscription=subscription, name=spec.name).exists():
            continue
        schedule = ReportSchedule(
            subscription=subscription,
            created_by=world.users[OWNER],
            name=spec.name,
            frequency=spec.frequency,
            weekday=Weekday.MONDAY,
            send_time=time(8, 0),
            recipients=list(spec.recipients),
            scope=ReportSchedule.Scope.WITH_SUB_ACCOUNTS,
            attached_reports=list(spec.attached_reports),
        )
        schedule.full_clean()
        schedule.save()
        # Set up when the history starts (save() dates a new schedule now: backdate it).
        joined_at = world.users[OWNER].date_joined
        ReportSchedule.objects.filter(pk=schedule.pk).update(
            active_since=joined_at, created_at=joined_at
        )
        created.append(spec.name)
    if not created:
        return []
    due = dispatch_reports(now=now)
    return [
        f"Report schedules {', '.join(created)} of {SUBSCRIPTION}: {len(due)} report(s) due, "
        "queued (the worker emails them)."
    ]
