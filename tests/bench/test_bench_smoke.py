"""The benchmark's data generator loads a consistent world: ledger == rollups == counters.

Behaviour only (no timings): a tiny data set in the test database, checked against the
product's own rebuild of rollups and counters from the ledger.
"""

from collections import Counter
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count, F, Q, Sum

from accounts.models import Membership, Role, Subscription
from bench.generate import generate
from credits.ledger_columns import ROLLUP_COLUMNS
from credits.models import (
    BillingPeriod,
    CreditEvent,
    DailyUsage,
    IdempotencyRecord,
    TeamPeriodUsage,
    UserPeriodUsage,
)
from credits.rollups import rebuild_rollups

pytestmark = pytest.mark.django_db

EVENTS = 3000


@pytest.fixture
def generated():
    connection.ensure_connection()
    return generate(
        connection.connection,
        events=EVENTS,
        subscriptions=4,
        commit=False,
        progress=lambda message: None,
    )


def rollup_rows(subscription):
    rows = DailyUsage.objects.filter(subscription=subscription)
    return Counter(rows.values_list(*ROLLUP_COLUMNS))


def counters(subscription):
    periods = BillingPeriod.objects.filter(subscription=subscription)
    return (
        sorted(periods.values_list("pk", "credits_used", "excess_used")),
        sorted(
            UserPeriodUsage.objects.filter(period__in=periods).values_list(
                "period_id", "user_id", "credits_used"
            )
        ),
        sorted(
            TeamPeriodUsage.objects.filter(period__in=periods).values_list(
                "period_id", "team_id", "credits_used"
            )
        ),
    )


def test_it_loads_the_events_asked_for_across_skewed_subscriptions(generated):
    assert CreditEvent.objects.count() == EVENTS
    per_subscription = sorted(
        CreditEvent.objects.values("subscription")
        .annotate(n=Count("id"))
        .values_list("n", flat=True),
        reverse=True,
    )
    assert len(per_subscription) == 4
    assert per_subscription[0] > per_subscription[-1]  # Zipf: the first customer is the biggest


def test_ledger_rollups_and_counters_agree(generated):
    ledger_total = CreditEvent.objects.aggregate(total=Sum("credits"))["total"]
    assert ledger_total > 0
    assert DailyUsage.objects.aggregate(total=Sum("credits"))["total"] == ledger_total
    assert DailyUsage.objects.aggregate(runs=Sum("runs"))["runs"] == EVENTS
    assert BillingPeriod.objects.aggregate(total=Sum("credits_used"))["total"] == ledger_total
    for period in BillingPeriod.objects.all():
        in_period = CreditEvent.objects.filter(period=period)
        total = in_period.aggregate(total=Sum("credits"))["total"] or Decimal(0)
        assert total == period.credits_used
        assert not in_period.exclude(timestamp__gte=period.start, timestamp__lt=period.end).exists()


def test_it_matches_the_products_own_rebuild_from_the_ledger(generated):
    """Local days from ``AT TIME ZONE`` equal the product's zoneinfo days, DST included."""
    for subscription in Subscription.objects.filter(pk__in=generated.subscription_ids):
        before = (rollup_rows(subscription), counters(subscription))
        rebuild_rollups(subscription=subscription)
        assert (rollup_rows(subscription), counters(subscription)) == before


def test_every_event_has_its_idempotency_record(generated):
    assert IdempotencyRecord.objects.count() == EVENTS
    assert not IdempotencyRecord.objects.filter(event__isnull=True).exists()
    assert not IdempotencyRecord.objects.exclude(key=F("event__idempotency_key")).exists()


def test_each_subscription_has_an_admin_and_no_period_is_overspent(generated):
    for subscription in Subscription.objects.filter(pk__in=generated.subscription_ids):
        assert (
            Membership.objects.filter(
                subscription=subscription, role=Role.SUBSCRIPTION_ADMIN
            ).count()
            == 1
        )
        assert not BillingPeriod.objects.filter(
            Q(subscription=subscription) & Q(credits_used__gt=subscription.base_allocation)
        ).exists()
