"""Emails to subscription admins: usage thresholds crossed, and a new period opened.

Each email is owed by one ``ThresholdAlert`` row, unique per (period, threshold), and is sent
once per row: the sender locks the row, sends, and sets ``notified_at`` in the same
transaction. A second delivery of the task (a retry, a redelivered message, the sweep) finds
the row locked (``SKIP LOCKED``) or already notified and sends nothing; an SMTP failure rolls
back, leaving ``notified_at`` empty for the retry. The one gap left is a worker dying after the
SMTP server accepted the message and before the commit: the retry sends it again, which we
prefer to losing an alert. One message goes to all the admins, so an SMTP failure never leaves
some of them notified and others not.

The reset notice of a new period is claimed with a row of its own, threshold
``period_opened``, so that two beat runs cannot both send it.
"""

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import connection, transaction
from django.db.models import Count, Min
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from accounts.models import Subscription
from core import metrics
from core.display import format_credits

from . import webhooks
from .models import BillingPeriod, ThresholdAlert
from .periods import days_until_reset, local_date
from .recipients import admin_emails

logger = logging.getLogger(__name__)

PERIOD_OPENED = ThresholdAlert.Threshold.PERIOD_OPENED

# The sweep leaves fresh alerts to the task queued at commit, and gives up on stale ones.
SWEEP_AFTER = timedelta(minutes=10)
SWEEP_UNTIL = timedelta(days=3)

SUBJECTS = {
    ThresholdAlert.Threshold.ALLOCATION_80: "{name} crossed 80% of its credits for {month}",
    ThresholdAlert.Threshold.ALLOCATION_100: "{name} has used all of its credits for {month}",
    ThresholdAlert.Threshold.EXCESS_100: "{name} has used all of its excess allowance for {month}",
    PERIOD_OPENED: "{name}: your credits have been reset for {month}",
}


# --- Sending --------------------------------------------------------------------------------


def send_alert(*, alert_id: int) -> bool:
    """Email the subscription's admins about the alert (a threshold crossed, or a new period
    opened); False if it was already sent, is being sent, or does not exist.

    Its webhook event is published first, in a transaction of its own, so that an SMTP outage
    delays the email only; publishing again (a retry) owes each endpoint nothing new.
    """
    with transaction.atomic():
        alert = _claim_alert(alert_id)
        if alert is None:
            logger.info("event=alert_skipped alert_id=%s reason=sent_or_sending", alert_id)
            return False
        _publish(alert, now=timezone.now())
    with transaction.atomic():
        alert = _claim_alert(alert_id)
        if alert is None:
            return False
        recipients = admin_emails(alert.subscription)
        if recipients:
            try:
                _message(alert, recipients).send(fail_silently=False)
            except Exception:
                metrics.ALERTS_FAILED.labels(channel="email").inc()
                raise
            metrics.ALERTS_SENT.labels(channel="email").inc()
        claimed = ThresholdAlert.objects.filter(pk=alert.pk, notified_at__isnull=True).update(
            notified_at=timezone.now()
        )
    logger.info(
        "event=alert_sent alert_id=%s threshold=%s subscription_id=%s recipients=%s",
        alert.pk,
        alert.threshold,
        alert.subscription_id,
        len(recipients),
    )
    return claimed == 1


def _claim_alert(alert_id: int) -> ThresholdAlert | None:
    """The alert, locked for this sender, unless it was sent or another sender holds it."""
    return (
        ThresholdAlert.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("period", "subscription")
        .filter(pk=alert_id, notified_at__isnull=True)
        .first()
    )


def send_alerts(*, alert_ids: list[int]) -> int:
    """Send each alert (see ``send_alert``); return how many were sent.

    An SMTP error stops at that alert and is raised, so that the task retries with backoff; the
    retry skips the alerts already sent.
    """
    return sum(send_alert(alert_id=alert_id) for alert_id in alert_ids)


@dataclass(frozen=True)
class PeriodFacts:
    """What an email says about a period, already formatted (credits as exact decimals)."""

    month: date
    first_day: date
    last_day: date
    reset_on: date
    days_until_reset: int
    credits_used: str
    base_allocation: str
    remaining: str
    utilisation_percent: str | None
    excess_used: str
    excess_allowance: str
    ended: bool = False  # an alert sent after its period ended (a sweep, the demo)


def period_facts(period: BillingPeriod, *, now: datetime) -> PeriodFacts:
    subscription = period.subscription
    zone = subscription.zone
    allocation = subscription.base_allocation
    first_day = local_date(period.start, zone)
    reset_on = local_date(period.end, zone)
    utilisation = (
        (period.credits_used * 100 / allocation).quantize(Decimal("0.1")) if allocation else None
    )
    return PeriodFacts(
        month=first_day,
        first_day=first_day,
        last_day=reset_on - timedelta(days=1),
        reset_on=reset_on,
        days_until_reset=days_until_reset(max(now, period.start), zone),
        credits_used=format_credits(period.credits_used),
        base_allocation=format_credits(allocation),
        remaining=format_credits(max(Decimal(0), allocation - period.credits_used)),
        utilisation_percent=None if utilisation is None else f"{utilisation:f}",
        excess_used=format_credits(period.excess_used),
        excess_allowance=format_credits(subscription.excess_allowance),
        ended=now >= period.end,
    )


# What each alert is to webhooks: (event type, target, percent of the target).
ALERT_EVENTS = {
    ThresholdAlert.Threshold.ALLOCATION_80: ("threshold.crossed", "allocation", 80),
    ThresholdAlert.Threshold.ALLOCATION_100: ("limit.reached", "allocation", 100),
    ThresholdAlert.Threshold.EXCESS_100: ("limit.reached", "excess_allowance", 100),
    PERIOD_OPENED: ("period.opened", None, None),
}


def _publish(alert: ThresholdAlert, *, now: datetime) -> None:
    """The alert as a webhook event to every endpoint of the subscription, in the sender's
    transaction (its id comes from the alert's row: a retried send publishes it once)."""
    subscription, period = alert.subscription, alert.period
    if not subscription.webhook_endpoints.exists():
        return
    period.subscription = subscription
    event_type, target, percent = ALERT_EVENTS[alert.threshold]
    data = {"period": {"start": period.start.isoformat(), "end": period.end.isoformat()}}
    if target is None:
        summary = f"{subscription.name}: a new billing period opened."
        data["base_allocation"] = f"{subscription.base_allocation:f}"
    else:
        summary = alert_headline(alert.threshold, subscription, period_facts(period, now=now))
        used, limit = (
            (period.credits_used, subscription.base_allocation)
            if target == "allocation"
            else (period.excess_used, subscription.excess_allowance)
        )
        data |= {
            "target": {"type": target},
            "threshold_percent": str(percent),
            "credits_used": f"{used:f}",
            "credits_limit": f"{limit:f}",
        }
    webhooks.publish(
        subscription=subscription,
        event_type=event_type,
        cause=f"threshold_alert:{alert.pk}",
        summary=summary,
        data=data,
        now=now,
    )


def admin_dashboard_url(subscription: Subscription) -> str:
    """Where an alert sends its recipients, the subscription's admins: the subscription's
    dashboard in the admin (their own /usage/ page shows only what they used themselves)."""
    query = urlencode({"subscription": subscription.pk})
    return f"{settings.SITE_URL.rstrip('/')}{reverse('admin-credit-usage')}?{query}"


def alert_headline(threshold: str, subscription: Subscription, period: PeriodFacts) -> str:
    """What the alert says first: the threshold that was crossed, then the usage now, which
    may be well past it (one large event, or usage that went on in soft mode).

    ``Globex crossed 80% of its base allocation for November 2026; usage is now 106.2%.``
    """
    month = f"{period.month:%B %Y}"
    if period.utilisation_percent is None:
        now = f"{period.credits_used} credits {'were' if period.ended else 'are'} used"
    elif period.ended:
        now = f"usage ended the period at {period.utilisation_percent}%"
    else:
        now = f"usage is now {period.utilisation_percent}%"
    if threshold == ThresholdAlert.Threshold.ALLOCATION_80:
        crossed = f"crossed 80% of its base allocation for {month}"
    elif threshold == ThresholdAlert.Threshold.ALLOCATION_100:
        crossed = f"reached its base allocation of {period.base_allocation} credits for {month}"
    else:
        crossed = f"reached its excess allowance of {period.excess_allowance} credits for {month}"
        now += " of the base allocation"
    return f"{subscription.name} {crossed}; {now}."


def _message(alert: ThresholdAlert, recipients: list[str]) -> EmailMultiAlternatives:
    template = (
        "emails/period_opened" if alert.threshold == PERIOD_OPENED else "emails/threshold_alert"
    )
    now = timezone.now()
    period, subscription = alert.period, alert.subscription
    period.subscription = subscription
    facts = period_facts(period, now=now)
    previous = (
        BillingPeriod.objects.filter(subscription=subscription, end=period.start)
        .select_related("subscription")
        .first()
    )
    context = {
        "subscription": subscription,
        "threshold": alert.threshold,
        "headline": alert_headline(alert.threshold, subscription, facts),
        "period": facts,
        "previous": period_facts(previous, now=now) if previous else None,
        "soft_mode": subscription.limit_mode == Subscription.LimitMode.SOFT,
        "timezone": subscription.timezone,
        "usage_url": admin_dashboard_url(subscription),
    }
    subject = SUBJECTS[alert.threshold].format(
        name=subscription.name, month=facts.month.strftime("%B %Y")
    )
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"{template}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
    return message


# --- Queueing ---------------------------------------------------------------------------------


# The reset notice owed by each current period whose subscription existed before the period
# started (a subscription created mid-month has had no reset), claimed by inserting its row.
CLAIM_RESET_NOTICES = """
INSERT INTO {alert} (subscription_id, period_id, threshold, crossed_at)
SELECT p.subscription_id, p.id, CAST(%(threshold)s AS varchar(30)), %(now)s
FROM {period} p JOIN {subscription} s ON s.id = p.subscription_id
WHERE p.start <= %(now)s AND p."end" > %(now)s AND s.created_at < p.start
  AND NOT EXISTS (SELECT 1 FROM {alert} a WHERE a.period_id = p.id AND a.threshold = %(threshold)s)
ORDER BY p.id
ON CONFLICT (subscription_id, period_id, threshold) DO NOTHING
RETURNING id
"""

# Reset notices travel to the workers in tasks of this many: a message per notice made the
# month start of 100,000 subscriptions spend most of its time on the broker.
NOTICES_PER_TASK = 500


def claim_reset_notices(*, now: datetime) -> list[int]:
    """Claim the reset notice of every current period that still owes one; return the claimed
    alerts' ids, for ``credits.tasks`` to queue after the claim commits, ``NOTICES_PER_TASK``
    to a task.

    One statement claims them all: the unique (period, threshold) row makes two concurrent
    runs claim each notice once. Only current periods qualify, so months opened by a catch-up
    after downtime get no notice of their own.
    """
    sql = CLAIM_RESET_NOTICES.format(
        alert=ThresholdAlert._meta.db_table,
        period=BillingPeriod._meta.db_table,
        subscription=Subscription._meta.db_table,
    )
    params = {"threshold": PERIOD_OPENED, "now": connection.ops.adapt_datetimefield_value(now)}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return sorted(alert_id for (alert_id,) in cursor.fetchall())


def unsent_alerts(*, now: datetime) -> tuple[int, datetime | None]:
    """How many alerts still owe their email, and when the oldest crossed its threshold, for
    ``/metrics``: the lag between a crossing and its email. Those given up on (older than
    ``SWEEP_UNTIL``) are not counted."""
    backlog = ThresholdAlert.objects.filter(
        notified_at__isnull=True, crossed_at__gte=now - SWEEP_UNTIL
    ).aggregate(count=Count("pk"), oldest=Min("crossed_at"))
    return backlog["count"], backlog["oldest"]


def send_unsent_alerts(*, now: datetime) -> int:
    """Send the alerts whose email was never sent (a broker outage at commit, a task that gave
    up); return how many were sent.

    Sent here rather than queued, so that an SMTP outage costs one attempt per sweep instead of
    a new chain of retries each time. Sending is claimed, so an alert a task is sending at the
    same moment is skipped.
    """
    unsent = ThresholdAlert.objects.filter(
        notified_at__isnull=True,
        crossed_at__lt=now - SWEEP_AFTER,
        crossed_at__gte=now - SWEEP_UNTIL,
    ).order_by("pk")
    sent = 0
    for alert_id in list(unsent.values_list("pk", flat=True)):
        try:
            sent += send_alert(alert_id=alert_id)
        except OSError:
            logger.exception("event=unsent_alerts_stopped alert_id=%s reason=smtp_error", alert_id)
            break
    if sent:
        logger.info("event=unsent_alerts_sent count=%s", sent)
    return sent
