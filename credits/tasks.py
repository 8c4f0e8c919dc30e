"""Celery tasks: a few lines around a service each, and safe to run twice."""

from celery import shared_task
from django.utils import timezone

from . import billing, notifications, partitions, pruning

# SMTP errors (smtplib.SMTPException) and network failures are all OSErrors: retry them with
# exponential backoff, 30 s doubling to at most an hour: 30 s, 1, 2, 4, 8, 16, 32 min, then
# 1 h three times (ten retries, about 4 h 4 min after the first try), then give up. No jitter:
# Celery's "full jitter" drew each delay anywhere from 0 to that figure (3 s, 1 s, 93 s ...), so
# the schedule the README states was not the one that ran.
EMAIL_RETRY = {
    "autoretry_for": (OSError,),
    "retry_backoff": 30,
    "retry_backoff_max": 3600,
    "retry_jitter": False,
    "max_retries": 10,
}


@shared_task(**EMAIL_RETRY)
def send_threshold_alert(alert_id: int) -> bool:
    """Queued by the recording service after the transaction that crossed the threshold."""
    return notifications.send_alert(alert_id=alert_id)


@shared_task(**EMAIL_RETRY)
def send_reset_notices(alert_ids: list[int]) -> int:
    """Queued by ``open_billing_periods`` once new periods' notices are claimed, a chunk of
    alert ids a task; a retry skips the notices already sent."""
    return notifications.send_alerts(alert_ids=alert_ids)


@shared_task(**EMAIL_RETRY)
def send_reset_notice(alert_id: int) -> bool:
    """One reset notice: what ``open_billing_periods`` queued before it queued them in chunks
    (``send_reset_notices``); kept for the messages still in a queue."""
    return notifications.send_alert(alert_id=alert_id)


@shared_task
def open_billing_periods() -> dict:
    """Every 15 minutes (UTC): open each subscription's period once its local month starts,
    catching up months missed while beat was down, and queue each new period's reset notice.
    A few statements whatever the number of subscriptions, each safe to run twice at once."""
    now = timezone.now()
    caught_up = billing.open_current_periods(now=now)
    notices = notifications.queue_reset_notices(now=now)
    return {"subscriptions_caught_up": caught_up, "reset_notices": notices}


@shared_task
def send_unsent_alerts() -> int:
    """Every 15 minutes: send the alert emails that were never sent."""
    return notifications.send_unsent_alerts(now=timezone.now())


@shared_task
def create_ledger_partitions() -> list[str]:
    """Every 6 hours: make sure the ledger has partitions for this month and the next three."""
    return partitions.ensure_ledger_partitions(now=timezone.now())


@shared_task
def prune_session_claims() -> int:
    """Daily: delete the session claims of local days on which no event can be recorded any
    more (``pruning.first_day_kept``); return how many went."""
    return pruning.prune_session_claims(now=timezone.now())
