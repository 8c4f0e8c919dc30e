"""Billing periods as rows: found or opened lazily, so recording never depends on beat."""

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Subquery

from accounts.models import Subscription

from .models import BillingPeriod
from .periods import local_date, local_midnight, month_start, next_month_start, period_bounds

logger = logging.getLogger(__name__)


def period_for(*, subscription: Subscription, instant: datetime) -> BillingPeriod:
    """The subscription's period containing ``instant``, opened if it does not exist yet.

    Safe under concurrency: the unique (subscription, start) constraint decides the race and
    the loser reads the winner's row.
    """
    bounds = period_bounds(instant, subscription.zone)
    period = BillingPeriod.objects.filter(subscription=subscription, start=bounds.start).first()
    if period is not None:
        return period
    try:
        with transaction.atomic():
            return BillingPeriod.objects.create(
                subscription=subscription, start=bounds.start, end=bounds.end
            )
    except IntegrityError:
        return BillingPeriod.objects.get(subscription=subscription, start=bounds.start)


def open_missed_periods(
    *, subscription: Subscription, now: datetime, latest_start: datetime | None
) -> BillingPeriod:
    """Open every period from the one after ``latest_start`` through the one containing ``now``.

    Without any period yet, start at the month the subscription was created in, so that the
    months are contiguous whatever happened to beat. Returns the current period.
    """
    zone = subscription.zone
    current = month_start(local_date(now, zone))
    if latest_start is None:
        month = month_start(local_date(min(subscription.created_at, now), zone))
    else:
        month = next_month_start(local_date(latest_start, zone))
    while month < current:
        period_for(subscription=subscription, instant=local_midnight(month, zone))
        month = next_month_start(month)
    return period_for(subscription=subscription, instant=now)


def open_current_periods(*, now: datetime) -> int:
    """Make sure every subscription has its period containing ``now``; return how many
    subscriptions had to catch up.

    One query finds the subscriptions without a current period (in the steady state, none), so
    running this every few minutes costs little. Each period is opened by ``period_for``, whose
    unique constraint makes concurrent runs (two beats, a retry) open it once. A subscription
    that fails (say, a time zone the server does not know) is logged and skipped; the others
    still open.
    """
    periods = BillingPeriod.objects.filter(subscription=OuterRef("pk"))
    behind = (
        Subscription.objects.filter(~Exists(periods.filter(start__lte=now, end__gt=now)))
        .annotate(latest_start=Subquery(periods.order_by("-start").values("start")[:1]))
        .order_by("pk")
    )
    caught_up = 0
    for subscription in behind.iterator(chunk_size=500):
        try:
            open_missed_periods(
                subscription=subscription, now=now, latest_start=subscription.latest_start
            )
        except Exception:
            logger.exception("event=period_not_opened subscription_id=%s", subscription.pk)
            continue
        caught_up += 1
    if caught_up:
        logger.info("event=periods_opened subscriptions=%s", caught_up)
    return caught_up
