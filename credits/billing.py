"""Billing periods as rows: found or opened lazily, so recording never depends on beat."""

from datetime import datetime

from django.db import IntegrityError, transaction

from accounts.models import Subscription

from .models import BillingPeriod
from .periods import period_bounds


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
