"""Celery tasks of the scheduled reports: a few lines around ``reports.services`` each, and
safe to run twice (every email is claimed by its ``Delivery`` row). Sends are queued from here,
so that the services never import the tasks that call them."""

import logging
from datetime import date, datetime

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from core.retry import EMAIL_RETRY

from . import large_exports, services, statements
from .services import DueReport

logger = logging.getLogger(__name__)


def queue_report(report: DueReport, *, countdown: int | None = None) -> None:
    """Hand the report to a worker after the commit, ``countdown`` seconds later for a retry."""

    def queue() -> None:
        args = (report.schedule_id, report.period_start.isoformat(), report.period_end.isoformat())
        try:
            send_scheduled_report.apply_async(args, countdown=countdown)
        except Exception:  # the broker is down: the next dispatch queues it again
            logger.exception("event=report_not_queued schedule_id=%s", report.schedule_id)

    transaction.on_commit(queue)


def dispatch_reports(*, now: datetime) -> list[DueReport]:
    """Claim what is due and queue one send task per (schedule, period)."""
    due = services.claim_due_reports(now=now)
    for report in due:
        queue_report(report)
    return due


@transaction.atomic
def resend_failed(*, deliveries, now: datetime) -> int:
    """Put failed deliveries back to pending and queue their reports; returns how many."""
    count, reports = services.reopen_failed(deliveries=deliveries, now=now)
    for report in reports:
        queue_report(report)
    return count


@shared_task
def dispatch_due_reports() -> int:
    """Every 5 minutes (UTC): hand each report that fell due, in its subscription's time zone,
    to ``send_scheduled_report``, catching up on any that fell due while beat was down."""
    return len(dispatch_reports(now=timezone.now()))


@shared_task(bind=True, max_retries=EMAIL_RETRY["max_retries"])
def send_scheduled_report(self, schedule_id: int, period_start: str, period_end: str) -> int:
    """Send one report to its recipients; SMTP failures are retried with backoff, and the last
    one marks the deliveries failed."""
    result = services.send_report(
        schedule_id=schedule_id,
        period_start=date.fromisoformat(period_start),
        period_end=date.fromisoformat(period_end),
        final_attempt=self.request.retries >= self.max_retries,
    )
    if result.retry_in is not None:
        raise self.retry(countdown=result.retry_in)
    return len(result.sent)


@shared_task(**EMAIL_RETRY)
def write_large_export(**request) -> str:
    """Write a large credit usage export to storage and email its link (safe to run twice)."""
    return large_exports.write_and_deliver(large_exports.ExportRequest(**request))


def queue_large_export(request: large_exports.ExportRequest) -> None:
    """Hand the export to a worker once the request's transaction commits."""
    transaction.on_commit(lambda: write_large_export.delay(**request.as_task_arguments()))


@shared_task
def announce_closed_statements() -> int:
    """Every 15 minutes: publish ``statement.closed`` once for each period whose grace window
    ended (``statements.announce_closed_statements``, claimed per period)."""
    return statements.announce_closed_statements(now=timezone.now())


PERIODIC_TASKS = [
    {
        "name": "Dispatch due reports",
        "task": dispatch_due_reports.name,
        "every_minutes": 5,
        "description": "Hands the scheduled email reports that fell due (in each subscription's "
        "time zone) to the sender, catching up on any missed while beat was down.",
    },
    {
        "name": "Announce closed statements",
        "task": announce_closed_statements.name,
        "every_minutes": 15,
        "description": "Publishes the statement.closed webhook event once for each billing "
        "period whose grace window for late events ended.",
    },
]
