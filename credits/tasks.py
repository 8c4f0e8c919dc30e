"""Celery tasks: a few lines around a service each, and safe to run twice."""

import logging

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from core.retry import EMAIL_RETRY

from . import alert_rules, billing, grants, notifications, partitions, pruning, webhooks

logger = logging.getLogger(__name__)


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
    notices = notifications.claim_reset_notices(now=now)
    if notices:
        transaction.on_commit(lambda: queue_reset_notices(notices))
    return {"subscriptions_caught_up": caught_up, "reset_notices": len(notices)}


def queue_reset_notices(alert_ids: list[int]) -> None:
    """``send_reset_notices`` tasks of ``notifications.NOTICES_PER_TASK`` notices each; when
    the broker is down, the sweep (``send_unsent_alerts``) sends the rest later."""
    size = notifications.NOTICES_PER_TASK
    for first in range(0, len(alert_ids), size):
        try:
            send_reset_notices.delay(alert_ids[first : first + size])
        except Exception:
            logger.exception(
                "event=reset_notices_not_queued count=%s first_alert_id=%s",
                len(alert_ids) - first,
                alert_ids[first],
            )
            return


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


@shared_task
def queue_due_webhooks() -> int:
    """Every minute: queue the webhook deliveries due for another attempt
    (``webhooks.deliver_webhook``, one task each)."""
    return webhooks.queue_due_deliveries(now=timezone.now())


@shared_task(**EMAIL_RETRY)
def send_alert_firing(firing_id: int) -> bool:
    """Queued by ``evaluate_alert_rules`` once a rule's crossing is claimed."""
    return alert_rules.send_firing(firing_id=firing_id)


@shared_task
def evaluate_alert_rules() -> int:
    """Every minute: claim the crossings of the subscriptions' alert rules and queue their
    messages after the claim commits."""
    firings = alert_rules.evaluate_rules(now=timezone.now())
    transaction.on_commit(lambda: [send_alert_firing.delay(firing) for firing in firings])
    return len(firings)


@shared_task
def prune_hourly_usage() -> int:
    """Daily: delete the hourly rollup's rows older than its retention
    (``pruning.HOURLY_USAGE_RETENTION_DAYS``); return how many went."""
    return pruning.prune_hourly_usage(now=timezone.now())


@shared_task
def lapse_expired_grants() -> int:
    """Every 15 minutes: lapse the remainder of each grant past its expiry (and the late-event
    grace window), once per grant; return how many lapsed."""
    return grants.lapse_expired_grants(now=timezone.now())


PERIODIC_TASKS = [
    {
        "name": "Open billing periods",
        "task": open_billing_periods.name,
        "every_minutes": 15,
        "description": "Opens each subscription's new period when its local month starts, "
        "catches up missed months and queues reset notices.",
    },
    {
        "name": "Send unsent alerts",
        "task": send_unsent_alerts.name,
        "every_minutes": 15,
        "description": "Sends threshold alerts and reset notices whose email was never sent.",
    },
    {
        "name": "Evaluate alert rules",
        "task": evaluate_alert_rules.name,
        "every_minutes": 1,
        "description": "Finds the thresholds of alert rules crossed this period and sends "
        "each crossing once, by email, webhook and Slack.",
    },
    {
        "name": "Queue due webhooks",
        "task": queue_due_webhooks.name,
        "every_minutes": 1,
        "description": "Queues webhook deliveries due for a retry (exponential backoff for "
        "24 hours) and those the broker lost.",
    },
    {
        "name": "Create ledger partitions",
        "task": create_ledger_partitions.name,
        "every_minutes": 360,
        "description": "Creates the credit ledger's monthly partitions for the coming months.",
    },
    {
        "name": "Prune session claims",
        "task": prune_session_claims.name,
        "every_minutes": 1440,
        "description": "Deletes the agent session claims of local days that can no longer get "
        "an event (a month after the late-event grace window closes).",
    },
    {
        "name": "Prune hourly usage",
        "task": prune_hourly_usage.name,
        "every_minutes": 1440,
        "description": "Deletes the hourly usage rollup's rows older than "
        f"{pruning.HOURLY_USAGE_RETENTION_DAYS} days (the usage API's hourly windows).",
    },
    {
        "name": "Lapse expired grants",
        "task": lapse_expired_grants.name,
        "every_minutes": 15,
        "description": "Lapses the unused credits of each expired grant once, after the "
        "late-event grace window, with a ledger entry of the grant.",
    },
]
