"""Money in the usage figures: which currency a read of usage is priced in, and a row's cost,
rounded once to that currency's minor unit by the pricing rule (``core.money.round_money``).

A cost is summed from the rollups' ``cost`` (each event's base and excess credits times the
prices in effect when it happened, unrounded; credits drawn from grants cost nothing at use),
so a row of any report costs what its events cost, and a total is the sum of its rounded rows.

Prices are for the people who administer a subscription, so money is too: a read shows cost
only when its reader administers every account it covers; a project manager, a member or an
API key reads the same figures without it. A subscription's prices keep one currency; a read
of accounts in several currencies, or of accounts with no price in effect, has no cost either.
No cost is shown as "—" or an empty cell, never as a zero that looks like a price.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import (
    BooleanField,
    Case,
    DecimalField,
    Exists,
    ExpressionWrapper,
    Func,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Now

from accounts.models import Subscription
from core.display import format_money
from core.money import COST_DIGITS, PRICE_DIGITS, currency_places, round_money
from credits.models import PlanPrice, SubscriptionPrice


@dataclass(frozen=True)
class Cost:
    """An amount rounded to its currency's minor unit, or no cost (``amount`` None)."""

    amount: Decimal | None
    currency: str | None

    def __str__(self) -> str:
        return format_money(self.amount, self.currency)

    @property
    def priced(self) -> bool:
        return self.amount is not None


NO_COST = Cost(None, None)


def with_administered(subscriptions: QuerySet, user) -> QuerySet:
    administered = Subscription.objects.administered_by(user).filter(pk=OuterRef("pk"))
    return subscriptions.annotate(administered=Exists(administered))


def with_currency(subscriptions: QuerySet, principal) -> QuerySet:
    """``subscriptions`` with ``administered`` and ``currency``: that of the price in effect
    now (the subscription's own, else its plan's) when ``principal`` administers the
    subscription, else None. No extra query."""
    own = (
        SubscriptionPrice.objects.administered_by(principal)
        .filter(subscription_id=OuterRef("pk"), effective_from__lte=Now())
        .order_by("-effective_from")
    )
    plan = (
        PlanPrice.objects.visible_to(principal)
        .filter(plan=OuterRef("plan"), effective_from__lte=Now())
        .order_by("-effective_from")
    )
    return with_administered(subscriptions, principal).annotate(
        currency=Case(
            When(
                administered=True,
                then=Coalesce(
                    Subquery(own.values("currency")[:1]), Subquery(plan.values("currency")[:1])
                ),
            )
        )
    )


def reader_currency(accounts: list[Subscription], principal) -> str | None:
    """The one currency of the accounts' prices if ``principal`` administers every account,
    else None. Accounts read without ``currency`` (pages) cost one query, once."""
    if accounts and not all(hasattr(account, "currency") for account in accounts):
        read = Subscription.objects.visible_to(principal).filter(pk__in=[a.pk for a in accounts])
        found = {
            pk: (administered, currency)
            for pk, administered, currency in with_currency(read, principal).values_list(
                "pk", "administered", "currency"
            )
        }
        for account in accounts:
            account.administered, account.currency = found.get(account.pk, (False, None))
    if not all(getattr(account, "administered", False) for account in accounts):
        return None
    currencies = {account.currency for account in accounts} - {None}
    return currencies.pop() if len(currencies) == 1 else None


class RoundMoney(Func):
    """``round_money`` in SQL, for a column: half to even at the currency's minor unit
    (PostgreSQL's ``round`` rounds half away from zero), to exactly that many places."""

    arity = 1
    output_field = DecimalField(**COST_DIGITS)

    def __init__(self, expression, *, currency: str):
        places = currency_places(currency)
        scaled = f"(%(expressions)s * {10**places})"
        self.template = (
            f"round(CASE WHEN abs({scaled} - trunc({scaled})) = 0.5 "
            f"THEN 2 * round({scaled} / 2) ELSE round({scaled}) END / {10**places}, {places})"
        )
        super().__init__(expression)


def row_cost(amount: Decimal, currency: str | None) -> Decimal | None:
    """A row's cost rounded once to the currency's minor unit; None without a currency."""
    return None if currency is None else round_money(amount, currency)


def cost(amount: Decimal, currency: str | None) -> Cost:
    return Cost(row_cost(amount, currency), currency)


def rounded_total(amounts: Iterable[Decimal], currency: str | None) -> Cost:
    """Rows' unrounded costs each rounded once, then summed: a total equal to its rows."""
    if currency is None:
        return NO_COST
    return Cost(
        sum((row_cost(a, currency) for a in amounts), row_cost(Decimal(0), currency)), currency
    )


def total_cost(rows: Iterable[tuple[Decimal | None, str | None]]) -> Cost:
    """The sum of rounded rows (amount, currency): no cost unless every priced row shares
    one currency."""
    amounts = [(amount, currency) for amount, currency in rows if amount is not None]
    currencies = {currency for _, currency in amounts}
    if len(currencies) != 1:
        return NO_COST
    return Cost(sum(amount for amount, _ in amounts), currencies.pop())


def _price_rows(principal, instant):
    """The price rows in effect at ``instant`` for the outer row's subscription, newest
    first: its own (that ``principal`` administers), and its plan's."""
    own = (
        SubscriptionPrice.objects.administered_by(principal)
        .filter(subscription_id=OuterRef("subscription_id"), effective_from__lte=instant)
        .order_by("-effective_from")
    )
    plan = (
        PlanPrice.objects.visible_to(principal)
        .filter(plan=OuterRef("subscription__plan"), effective_from__lte=instant)
        .order_by("-effective_from")
    )
    return own, plan


def excess_price_at(principal, instant) -> Coalesce:
    """SQL: the excess price per credit in effect at ``instant`` (a value or a column) for
    the row's subscription; 0 without a price."""
    own, plan = _price_rows(principal, instant)
    return Coalesce(
        Subquery(own.values("excess_price")[:1]),
        Subquery(plan.values("excess_price")[:1]),
        Value(Decimal(0)),
        output_field=DecimalField(**PRICE_DIGITS),
    )


def prices_change_during(principal, start, end) -> Exists:
    """SQL: whether a price of the row's subscription (its own or its plan's) starts inside
    ``start`` to ``end``, so that one price does not cover the whole time."""
    inside = {"effective_from__gt": start, "effective_from__lt": end}
    own = SubscriptionPrice.objects.administered_by(principal).filter(
        subscription_id=OuterRef("subscription_id"), **inside
    )
    plan = PlanPrice.objects.visible_to(principal).filter(
        plan=OuterRef("subscription__plan"), **inside
    )
    return ExpressionWrapper(Exists(own) | Exists(plan), output_field=BooleanField())
