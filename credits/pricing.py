"""Prices in effect, and what credits cost.

A subscription's price at an instant is its latest own price (``SubscriptionPrice``) from
that instant or before, else its plan's latest (``PlanPrice``), else none: no cost. The
ledger keeps each event's unrounded cost (``CreditEvent.cost``); money is rounded once per
line where it is shown (``line_amount``, ``round_money``: the README's rounding rule).
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Value

from accounts.models import Subscription
from core.money import currency_places, line_amount, round_money

from .models import PlanPrice, SubscriptionPrice

__all__ = ["Terms", "currency_places", "line_amount", "price_at", "prices_of", "round_money"]


@dataclass(frozen=True)
class Terms:
    """The price in effect: per base credit and per excess credit, in ``currency``, from
    ``effective_from``."""

    currency: str
    credit_price: Decimal
    excess_price: Decimal
    effective_from: datetime

    def cost(self, *, base: Decimal, excess: Decimal) -> Decimal:
        """Unrounded: grant credits cost nothing when used (a grant is paid when bought)."""
        return base * self.credit_price + excess * self.excess_price


class PriceList:
    """A subscription's prices over time, read once (its own and its plan's), to price many
    events: the recording service prices a batch of any size with two queries."""

    def __init__(self, subscription: Subscription, rows=None):
        """``rows``: (currency, credit price, excess price, effective from, own) as the
        caller read them already; else they are read here."""
        if rows is None:
            fields = ("currency", "credit_price", "excess_price", "effective_from")
            own = SubscriptionPrice.objects.filter(subscription=subscription).values_list(
                *fields, Value(True)
            )
            plan = PlanPrice.objects.filter(plan=subscription.plan).values_list(
                *fields, Value(False)
            )
            rows = own.union(plan, all=True)
        rows = sorted(rows, key=lambda row: row[3], reverse=True)
        self.own = [Terms(*row[:4]) for row in rows if row[4]]
        self.plan = [Terms(*row[:4]) for row in rows if not row[4]]

    def at(self, instant: datetime) -> Terms | None:
        for terms in (self.own, self.plan):
            for row in terms:
                if row.effective_from <= instant:
                    return row
        return None


def prices_of(subscription: Subscription) -> PriceList:
    return PriceList(subscription)


def price_at(subscription: Subscription, instant: datetime) -> Terms | None:
    """The terms in effect for ``subscription`` at ``instant``, or None (no price: no cost)."""
    for rows in (
        SubscriptionPrice.objects.filter(subscription=subscription),
        PlanPrice.objects.filter(plan=subscription.plan),
    ):
        row = rows.filter(effective_from__lte=instant).order_by("-effective_from").first()
        if row is not None:
            return _terms(row)
    return None


def _terms(row: PlanPrice | SubscriptionPrice) -> Terms:
    return Terms(row.currency, row.credit_price, row.excess_price, row.effective_from)
