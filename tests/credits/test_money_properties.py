"""Money over random histories: events, grants with and without expiry, price changes, mode
changes and the clock crossing month ends in a far time zone (Auckland, UTC+13 in summer).

After every step, for every ledger row: the credit types sum to the total (base + grants +
excess, none negative), and its cost is base x credit price + excess x excess price of the
price in effect at its timestamp; the period counters, the grants' counters and the rollups
equal the ledger; no period's base exceeds the allocation and no grant gives more than it has.
"""

from contextlib import suppress
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import F, Sum
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from accounts.models import Role
from core.errors import DomainError
from credits.grants import add_grant, lapse_expired_grants, set_subscription_price
from credits.models import (
    BillingPeriod,
    CreditEvent,
    CreditGrant,
    DailyUsage,
    HourlyUsage,
    ProductRollup,
)
from credits.pricing import price_at
from credits.recording import Usage, record_usage
from tests import factories
from tests.factories import utc
from tests.histories import HistoryMachine, limit_mode_rule, run_histories

pytestmark = pytest.mark.django_db

START = utc(2026, 10, 29, 9)  # 22:00 in Auckland, two days before its November starts
ALLOCATION = Decimal(50)
credits_strategy = st.decimals(min_value=0, max_value=30, places=4, allow_nan=False)
price_strategy = st.decimals(min_value=0, max_value=Decimal("0.5"), places=6, allow_nan=False)
SUMS = ("credits", "grant_credits", "excess_credits", "cost")


def sums(rows, *keys) -> dict:
    """The sums of ``rows`` per value of ``keys`` (in all, without keys)."""
    totals = {name: Sum(name) for name in SUMS}
    if not keys:
        row = rows.aggregate(**totals)
        return {(): tuple(row[name] or 0 for name in SUMS)}
    return {
        tuple(row[key] for key in keys): tuple(row[name] for name in SUMS)
        for row in rows.values(*keys).annotate(**totals).order_by()
    }


class MoneyMachine(HistoryMachine):
    def __init__(self):
        super().__init__()
        self.now = START
        self.subscription = factories.SubscriptionFactory(
            timezone="Pacific/Auckland", base_allocation=ALLOCATION
        )
        self.environment = factories.EnvironmentFactory(
            project=factories.ProjectFactory(subscription=self.subscription)
        )
        factories.ProductFactory(slug="ai-agent").enabled_for.add(self.subscription)
        self.api_key, _ = factories.api_key(self.subscription)
        self.admin = factories.UserFactory(password="")
        factories.membership(self.admin, Role.SUBSCRIPTION_ADMIN, subscription=self.subscription)
        self.staff = factories.UserFactory(password="", is_staff=True, is_superuser=True)
        factories.plan_price(
            "pro", credit_price="0.010000", excess_price="0.030000", effective_from=START
        )

    @rule(credits=credits_strategy, hours_late=st.integers(min_value=0, max_value=60))
    def record_an_event(self, credits, hours_late):
        usage = Usage(
            idempotency_key=f"op-{next(self.keys)}",
            environment=self.environment.public_id,
            product="ai-agent",
            credits=credits,
            timestamp=self.now - timedelta(hours=hours_late),
        )
        # A refusal is fine: the invariants check that nothing went over.
        with self._clock(), suppress(DomainError):
            record_usage(api_key=self.api_key, usage=usage, now=self.now)

    @rule(
        credits=st.decimals(min_value=Decimal("0.0001"), max_value=40, places=4),
        hours=st.none() | st.integers(min_value=1, max_value=200),
        bonus=st.booleans(),
    )
    def add_a_grant(self, credits, hours, bonus):
        with self._clock():
            add_grant(
                subscription=self.subscription,
                kind="bonus" if bonus else "top_up",
                credits=credits,
                price=Decimal(0) if bonus else Decimal("9.99"),
                currency="EUR",
                expires_at=None if hours is None else self.now + timedelta(hours=hours),
                reason="Property",
                created_by=self.admin,
                now=self.now,
            )

    @rule(credit_price=price_strategy, excess_price=price_strategy)
    def change_the_price(self, credit_price, excess_price):
        self.now += timedelta(seconds=1)  # one price per instant
        with self._clock():
            set_subscription_price(
                subscription=self.subscription,
                currency="EUR",
                credit_price=credit_price,
                excess_price=excess_price,
                effective_from=self.now,
                created_by=self.staff,
                now=self.now,
            )

    change_the_mode = limit_mode_rule(max_allowance=40)

    @rule(hours=st.integers(min_value=1, max_value=40))
    def time_passes(self, hours):
        self.now += timedelta(hours=hours)
        with self._clock():
            lapse_expired_grants(now=self.now)

    # --- The invariants -----------------------------------------------------------------------

    @invariant()
    def types_sum_to_the_total_and_cost_is_credits_times_price(self):
        for event in CreditEvent.objects.filter(subscription=self.subscription):
            base = event.credits - event.grant_credits - event.excess_credits
            assert min(base, event.grant_credits, event.excess_credits) >= 0
            terms = price_at(self.subscription, event.timestamp)
            expected = terms.cost(base=base, excess=event.excess_credits) if terms else 0
            assert event.cost == expected, (event.timestamp, terms)

    @invariant()
    def counters_equal_the_ledger_and_stay_within_their_caps(self):
        ledger = CreditEvent.objects.filter(subscription=self.subscription)
        by_period = sums(ledger, "period_id")
        for period in BillingPeriod.objects.filter(subscription=self.subscription):
            credits, granted, excess, _ = by_period.get((period.pk,), (0, 0, 0, 0))
            assert (period.credits_used, period.grant_used, period.excess_used) == (
                credits,
                granted,
                excess,
            )
            assert credits - granted - excess <= ALLOCATION
        grants = CreditGrant.objects.filter(subscription=self.subscription)
        given = grants.aggregate(total=Sum("credits_used"))["total"] or 0
        assert given == (ledger.aggregate(total=Sum("grant_credits"))["total"] or 0)
        assert not grants.filter(
            credits_used__gt=F("credits") + F("credits_adjusted") - F("credits_lapsed")
        ).exists()

    @invariant()
    def rollups_equal_the_ledger(self):
        ledger = CreditEvent.objects.filter(subscription=self.subscription)
        assert sums(DailyUsage.objects.filter(subscription=self.subscription), "period_id") == (
            sums(ledger, "period_id")
        )
        total = sums(ledger)
        assert sums(HourlyUsage.objects.filter(subscription=self.subscription)) == total
        monthly = ProductRollup.objects.filter(subscription=self.subscription, grain="month")
        assert sums(monthly) == total


def test_money_invariants_hold_for_random_histories(db):
    run_histories(MoneyMachine, examples=15, steps=20)
