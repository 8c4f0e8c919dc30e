"""Sending scheduled reports exactly once per recipient and period.

Two claims, each a database write whose result decides who acts:

1. **The period, per schedule** (``claim_due_reports``): a conditional
   ``UPDATE report_schedule SET last_due_at = <due> WHERE id = ... AND last_due_at < <due>``.
   Only the dispatcher whose update changed the row goes on, so two beats, beat firing twice or
   a manual run of ``send_due_reports`` hand each period over once. In the same transaction it
   creates the ``Delivery`` rows, unique per (schedule, period, recipient), with
   ``get_or_create``: the unique constraint is the backstop that makes a second email to the
   same person impossible whatever else goes wrong.
2. **Each email** (``send_report``): the sender locks the pending delivery row with
   ``SELECT ... FOR UPDATE SKIP LOCKED``, sends, and marks it sent in the same transaction. A
   redelivered or duplicated task finds the row locked or no longer pending and sends nothing.
   As with the threshold alerts, the one gap left is a worker dying after the SMTP server
   accepted the message and before the commit: the retry sends it again, which we prefer to
   losing a report.

A beat that was down catches up: the dispatch looks at the most recent period due (however long
ago) and every period is claimed once, so nothing due is skipped and nothing is sent twice.
SMTP errors are retried with exponential backoff (``core.retry.EMAIL_RETRY``'s numbers),
whichever entry point made the failed attempt (the send task, ``send_due_reports``, a resend):
the worker runs the retry, and a retry or first send whose task was lost (a broker outage when
it was queued) is queued again by the next dispatch once it is ``SWEEP_AFTER`` overdue (the
sends are queued by ``reports.tasks``, which calls these services). The
``MAX_ATTEMPTS``-th failure marks the delivery failed, for the admin to see and resend.
"""

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from celery.utils.time import get_exponential_backoff_interval
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.audit import delete_audited, save_audited
from core.errors import DomainError
from core.retry import EMAIL_RETRY

from . import emails
from .models import Delivery, ReportSchedule, Unsubscribe
from .schedules import ReportPeriod, latest_due
from .unsubscribe import unsubscribe_url

logger = logging.getLogger(__name__)

# A pending delivery nobody has tried for this long lost its task: the dispatch queues it again.
# After SWEEP_UNTIL it is left alone (and shows as pending in the admin, for a resend).
SWEEP_AFTER = timedelta(minutes=15)
SWEEP_UNTIL = timedelta(days=7)


class OwnerCannotSee(DomainError):
    code = "owner_cannot_see"
    message = (
        "The schedule's owner can no longer see this scope: an admin can take it over "
        '(admin action "Make me the owner").'
    )


@dataclass(frozen=True)
class DueReport:
    """One (schedule, period) handed to the sender."""

    schedule_id: int
    period_start: date
    period_end: date


@dataclass
class SendResult:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    retry_in: int | None = None  # seconds, when some deliveries wait for another attempt


# --- Schedules -------------------------------------------------------------------------------


@transaction.atomic
def save_schedule(*, schedule: ReportSchedule, actor) -> ReportSchedule:
    """Validate (``ReportSchedule.clean``: recipients, scope, the owner's reach) and save; an
    ``actor``'s change goes into the audit trail with what it changed."""
    return save_audited(schedule, actor=actor, noun="schedule")


@transaction.atomic
def delete_schedule(*, schedule: ReportSchedule, actor) -> None:
    delete_audited(schedule, actor=actor, noun="schedule")


# --- Dispatch --------------------------------------------------------------------------------


def due_period(schedule: ReportSchedule, *, now: datetime) -> ReportPeriod:
    return latest_due(
        frequency=schedule.frequency,
        weekday=schedule.weekday,
        send_time=schedule.send_time,
        zone=schedule.subscription.zone,
        now=now,
    )


def claim_due_reports(*, now: datetime, include_past: bool = False) -> list[DueReport]:
    """Claim the most recent due period of every enabled schedule that has not had it yet, and
    create its deliveries; also return the reports whose pending deliveries lost their task.

    ``include_past`` also claims a period that fell due before the schedule was created or
    resumed (once, like any other): for demos and manual catch-up.
    """
    due = []
    # Schedules whose owner is gone are claimed too: their deliveries fail with the reason,
    # in the admin, rather than stopping without a trace.
    schedules = ReportSchedule.objects.filter(enabled=True).select_related("subscription")
    for schedule in schedules.order_by("pk").iterator(chunk_size=500):
        period = due_period(schedule, now=now)
        if period.due_at < schedule.active_since and not include_past:
            continue
        if schedule.last_due_at is not None and schedule.last_due_at >= period.due_at:
            continue
        if _claim_period(schedule, period, now=now):
            due.append(DueReport(schedule.pk, period.first_day, period.last_day))
    claimed = set(due)
    due += [report for report in _lost_reports(now=now) if report not in claimed]
    return due


@transaction.atomic
def _claim_period(schedule: ReportSchedule, period: ReportPeriod, *, now: datetime) -> bool:
    claimed = (
        ReportSchedule.objects.filter(pk=schedule.pk)
        .filter(Q(last_due_at__isnull=True) | Q(last_due_at__lt=period.due_at))
        .update(last_due_at=period.due_at)
    )
    if claimed != 1:
        return False
    unsubscribed = set(
        Unsubscribe.objects.filter(schedule=schedule).values_list("email", flat=True)
    )
    created = 0
    for recipient in schedule.recipients:
        if recipient in unsubscribed:
            continue
        _, is_new = Delivery.objects.get_or_create(
            schedule=schedule,
            period_start=period.first_day,
            period_end=period.last_day,
            recipient=recipient,
            defaults={"created_at": now, "next_attempt_at": now},
        )
        created += is_new
    logger.info(
        "event=report_due schedule_id=%s period=%s..%s due_at=%s deliveries=%s",
        schedule.pk,
        period.first_day,
        period.last_day,
        period.due_at.isoformat(),
        created,
    )
    return True


def _lost_reports(*, now: datetime) -> list[DueReport]:
    rows = (
        Delivery.objects.filter(
            status=Delivery.Status.PENDING,
            next_attempt_at__lte=now - SWEEP_AFTER,
            created_at__gte=now - SWEEP_UNTIL,
        )
        .order_by("schedule_id", "period_start", "period_end")
        .values_list("schedule_id", "period_start", "period_end")
        .distinct()
    )
    return [DueReport(*row) for row in rows]


# --- Sending ---------------------------------------------------------------------------------


# A delivery is tried once and retried this many times, then it is failed (for a resend).
MAX_ATTEMPTS = 1 + EMAIL_RETRY["max_retries"]


def retry_delay(attempt: int) -> int:
    """Seconds before attempt ``attempt + 1``: 30 s, 60 s, 120 s ... at most an hour
    (``EMAIL_RETRY``, the schedule the README states)."""
    return get_exponential_backoff_interval(
        factor=EMAIL_RETRY["retry_backoff"],
        retries=max(0, attempt - 1),
        maximum=EMAIL_RETRY["retry_backoff_max"],
        full_jitter=EMAIL_RETRY["retry_jitter"],
    )


def _reason_not_to_send(schedule: ReportSchedule, recipient: str) -> tuple[str, str] | None:
    """(status, why) when a pending delivery must not be sent any more."""
    if not schedule.enabled:
        return Delivery.Status.SKIPPED, "The schedule was paused."
    if recipient not in schedule.recipients:
        return Delivery.Status.SKIPPED, "No longer a recipient."
    if Unsubscribe.objects.filter(schedule=schedule, email=recipient).exists():
        return Delivery.Status.SKIPPED, "Unsubscribed."
    if not schedule.owner_may_see_scope():
        return Delivery.Status.FAILED, f"{OwnerCannotSee.message} Then resend."
    return None


def send_report(
    *, schedule_id: int, period_start: date, period_end: date, final_attempt: bool = False
) -> SendResult:
    """Send the pending deliveries of one report, each at most once (see the module docstring).

    The report is read and drawn once, then each recipient's email is sent under the lock of
    their delivery row. An SMTP failure counts an attempt and schedules another
    (``next_attempt_at``, and ``retry_in`` for the caller to queue), or marks the delivery
    failed on its ``MAX_ATTEMPTS``-th attempt or the caller's ``final_attempt``.
    """
    result = SendResult()
    schedule = (
        ReportSchedule.objects.select_related("subscription", "environment__project", "created_by")
        .filter(pk=schedule_id)
        .first()
    )
    if schedule is None:
        return result
    pending = Delivery.objects.filter(
        schedule=schedule,
        period_start=period_start,
        period_end=period_end,
        status=Delivery.Status.PENDING,
    )
    report = None
    for delivery_id in list(pending.order_by("recipient").values_list("pk", flat=True)):
        with transaction.atomic():
            delivery = (
                Delivery.objects.select_for_update(skip_locked=True)
                .filter(pk=delivery_id, status=Delivery.Status.PENDING)
                .first()
            )
            if delivery is None:
                continue  # sent meanwhile, or being sent by another worker
            now = timezone.now()
            reason = _reason_not_to_send(schedule, delivery.recipient)
            if reason is not None:
                delivery.status, delivery.last_error = reason
                delivery.next_attempt_at = None
                delivery.save(update_fields=["status", "last_error", "next_attempt_at"])
                skipped = delivery.status == Delivery.Status.SKIPPED
                (result.skipped if skipped else result.failed).append(delivery.recipient)
                continue
            if report is None:
                period = ReportPeriod(schedule.frequency, period_start, period_end, now)
                report = emails.build_report(schedule=schedule, period=period, now=now)
            message = emails.report_message(
                report=report,
                recipient=delivery.recipient,
                unsubscribe_url=unsubscribe_url(schedule_id=schedule.pk, email=delivery.recipient),
            )
            delivery.attempts += 1
            try:
                message.send(fail_silently=False)
            except OSError as error:  # smtplib.SMTPException and network errors
                final = final_attempt or delivery.attempts >= MAX_ATTEMPTS
                _failed_attempt(delivery, error, final=final, now=now, result=result)
            else:
                delivery.status = Delivery.Status.SENT
                delivery.sent_at = now
                delivery.next_attempt_at = None
                result.sent.append(delivery.recipient)
            delivery.save(
                update_fields=["status", "attempts", "last_error", "next_attempt_at", "sent_at"]
            )
    logger.info(
        "event=report_sent schedule_id=%s period=%s..%s sent=%s failed=%s skipped=%s retry_in=%s",
        schedule.pk,
        period_start,
        period_end,
        len(result.sent),
        len(result.failed),
        len(result.skipped),
        result.retry_in,
    )
    return result


def _failed_attempt(delivery, error, *, final: bool, now: datetime, result: SendResult) -> None:
    delivery.last_error = f"{type(error).__name__}: {error}"[:2000]
    logger.warning(
        "event=report_smtp_error delivery_id=%s attempt=%s final=%s error=%r",
        delivery.pk,
        delivery.attempts,
        final,
        delivery.last_error,
    )
    if final:
        delivery.status = Delivery.Status.FAILED
        delivery.next_attempt_at = None
        result.failed.append(delivery.recipient)
        return
    delay = retry_delay(delivery.attempts)
    result.retry_in = max(delay, result.retry_in or 0)  # one retry, when every one is due
    delivery.next_attempt_at = now + timedelta(seconds=delay)


# --- Admin actions -----------------------------------------------------------------------------


def send_test_report(*, schedule: ReportSchedule, to: str, now: datetime) -> ReportPeriod:
    """Email the report of the most recent period to ``to`` now, marked as a test. Nothing is
    recorded: the real report of that period is still sent (or was) as scheduled."""
    if not schedule.owner_may_see_scope():
        raise OwnerCannotSee(schedule=schedule.pk)
    period = due_period(schedule, now=now)
    report = emails.build_report(schedule=schedule, period=period, now=now)
    emails.report_message(
        report=report,
        recipient=to,
        unsubscribe_url=unsubscribe_url(schedule_id=schedule.pk, email=to),
        test=True,
    ).send(fail_silently=False)
    logger.info("event=report_test_sent schedule_id=%s", schedule.pk)
    return period


@transaction.atomic
def reopen_failed(*, deliveries, now: datetime) -> tuple[int, list[DueReport]]:
    """Put failed deliveries back to pending: how many, and the reports to queue again
    (``reports.tasks.resend_failed``).

    Only failed ones: a sent delivery is never sent again, and the conditional update makes a
    double click (or two admins) reopen them once.
    """
    failed = deliveries.filter(status=Delivery.Status.FAILED)
    reports = {
        DueReport(*row)
        for row in failed.values_list("schedule_id", "period_start", "period_end").distinct()
    }
    count = failed.update(status=Delivery.Status.PENDING, next_attempt_at=now)
    return count, sorted(reports, key=lambda r: (r.schedule_id, r.period_start))
