"""Grants (top-ups and bonuses) and prices: adding them, correcting grants, lapsing expired
grants' remainders. Every change is one transaction and one row of the audit trail.

Grants and prices are append-only. A grant's counters change only by conditional updates:
``credits_used`` by the charge (``credits.charging``), ``credits_adjusted`` by
``adjust_grant``, ``credits_lapsed`` by ``lapse_expired_grants``, once per grant. A grant
lapses after its expiry plus the late-event grace window, so that events dated before the
expiry can still draw on it.
"""

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import record_audit_event
from accounts.models import Subscription, User
from core.money import CREDIT_DIGITS, CREDIT_PLACES, PRICE_DIGITS, currency_places
from core.money import validate_currency as _validate_currency
from core.sql import first_row

from .errors import InvalidGrant, InvalidPrice, PeriodClosed
from .models import CreditGrant, GrantAdjustment, PlanPrice, SubscriptionPrice
from .periods import period_bounds
from .pricing import price_at

logger = logging.getLogger(__name__)

# What a person enters for a grant (API and admin), and the counters only services change.
GRANT_FIELDS = ("kind", "credits", "price", "currency", "effective_at", "expires_at", "reason")
GRANT_COUNTERS = ("credits_used", "credits_adjusted", "credits_lapsed")
MAX_CREDITS = Decimal(10) ** (CREDIT_DIGITS["max_digits"] - CREDIT_DIGITS["decimal_places"])
MAX_PRICE = Decimal(10) ** (PRICE_DIGITS["max_digits"] - PRICE_DIGITS["decimal_places"])


def _places(amount: Decimal) -> int:
    return max(0, -amount.as_tuple().exponent)


def _check_currency(currency: str, error) -> None:
    try:
        _validate_currency(currency)
    except ValidationError:
        raise error("Not an ISO 4217 currency code.", field="currency", value=currency) from None


def _check_amount(value, *, field: str, places: int, upper: Decimal, error, positive=False):
    if (
        not isinstance(value, Decimal)
        or not value.is_finite()
        or value < 0
        or (positive and value == 0)
        or value >= upper
        or _places(value.normalize()) > places
    ):
        least = "above 0" if positive else "at least 0"
        raise error(
            f"{field} must be {least}, with at most {places} decimal places.",
            field=field,
            value=str(value),
        )


# --- Grants ----------------------------------------------------------------------------------


def check_grant(
    *,
    subscription: Subscription,
    kind: str,
    credits: Decimal,
    reason: str,
    price: Decimal = Decimal(0),
    currency: str = "",
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> dict:
    """The grant's fields, checked and completed (currency, effective date), or the reason it
    is refused: credits not above 0, a negative price or one finer than the currency's minor
    unit, a priced bonus, a currency other than the subscription's, an effective date in a
    closed period (past its grace window), an expiry not after the effective date, no reason.
    """
    now = now or timezone.now()
    effective_at = effective_at or now
    if kind not in CreditGrant.Kind.values:
        raise InvalidGrant("kind must be top_up or bonus.", field="kind", value=kind)
    _check_amount(
        credits,
        field="credits",
        places=CREDIT_DIGITS["decimal_places"],
        upper=MAX_CREDITS,
        error=InvalidGrant,
        positive=True,
    )
    if not reason.strip():
        raise InvalidGrant("A grant needs a reason.", field="reason")
    if expires_at is not None and expires_at <= effective_at:
        raise InvalidGrant("The expiry must come after the effective date.", field="expires_at")
    bounds = period_bounds(effective_at, subscription.zone)
    if now > bounds.end + timedelta(hours=settings.LATE_EVENT_GRACE_HOURS):
        raise PeriodClosed(period_start=bounds.start.isoformat())
    terms = price_at(subscription, effective_at)
    currency = currency.upper() if currency else (terms.currency if terms else "")
    if currency:
        _check_currency(currency, InvalidGrant)
    if terms is not None and currency != terms.currency:
        raise InvalidGrant(f"The subscription's prices are in {terms.currency}.", field="currency")
    if price and not currency:
        raise InvalidGrant("A priced grant needs a currency.", field="currency")
    _check_amount(
        price,
        field="price",
        places=currency_places(currency) if currency else 0,
        upper=MAX_PRICE,
        error=InvalidGrant,
    )
    if kind == CreditGrant.Kind.BONUS and price:
        raise InvalidGrant("A bonus is free: its price is 0.", field="price")
    return {
        "subscription": subscription,
        "kind": kind,
        "credits": credits,
        "price": price,
        "currency": currency,
        "effective_at": effective_at,
        "expires_at": expires_at,
        "reason": reason,
    }


@transaction.atomic
def add_grant(*, created_by: User | None, **fields) -> CreditGrant:
    """Add a grant (``check_grant`` says what is refused), usable from ``effective_at``
    (default: now) until ``expires_at`` (optional)."""
    fields = check_grant(**fields)
    subscription = fields["subscription"]
    grant = CreditGrant.objects.create(**fields, created_by=created_by)
    _audit_new(
        subscription,
        created_by,
        "grant.added",
        grant,
        ("kind", "credits", "price", "currency", "effective_at", "expires_at"),
    )
    logger.info("event=grant_added subscription=%s grant=%s", subscription.pk, grant.pk)
    return grant


@transaction.atomic
def adjust_grant(
    *, grant: CreditGrant, credits: Decimal, reason: str, created_by: User | None
) -> GrantAdjustment:
    """Correct a grant by a signed number of credits; never below what it has already given."""
    if not isinstance(credits, Decimal) or not credits.is_finite() or credits == 0:
        raise InvalidGrant("An adjustment is a number of credits other than 0.", field="credits")
    if credits != credits.quantize(CREDIT_PLACES) or abs(credits) >= MAX_CREDITS:
        raise InvalidGrant("At most 4 decimal places.", field="credits")
    if not reason.strip():
        raise InvalidGrant("An adjustment needs a reason.", field="reason")
    table = CreditGrant._meta.db_table
    adjusted = first_row(
        f"UPDATE {table} SET credits_adjusted = credits_adjusted + %s "  # noqa: S608
        "WHERE subscription_id = %s AND id = %s AND credits_lapsed = 0 "
        "AND credits + credits_adjusted + %s >= credits_used RETURNING id",
        [credits, grant.subscription_id, grant.pk, credits],
    )
    if adjusted is None:
        raise InvalidGrant(
            "A grant cannot give back credits it has used, nor change once lapsed.",
            field="credits",
        )
    adjustment = GrantAdjustment.objects.create(
        subscription_id=grant.subscription_id,
        grant=grant,
        kind=GrantAdjustment.Kind.ADJUSTMENT,
        credits=credits,
        at=timezone.now(),
        reason=reason,
        created_by=created_by,
    )
    record_audit_event(
        subscription=grant.subscription,
        actor=created_by,
        action="grant.adjusted",
        obj=adjustment,
        changes={"grant": (None, grant), "credits": (None, credits), "reason": (None, reason)},
    )
    return adjustment


def lapse_expired_grants(*, now: datetime | None = None) -> int:
    """Lapse the remainder of every grant past its expiry and the late-event grace window:
    a ``lapse`` adjustment and ``credits_lapsed``, once per grant (the unique lapse row and the
    conditional update make a second run, or a concurrent one, do nothing). Returns how many
    grants lapsed."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.LATE_EVENT_GRACE_HOURS)
    due = CreditGrant.objects.filter(expires_at__lte=cutoff, credits_lapsed=0).values_list(
        "subscription_id", "pk"
    )
    lapsed = 0
    for subscription_id, grant_id in due.iterator():
        lapsed += _lapse(subscription_id, grant_id)
    return lapsed


@transaction.atomic
def _lapse(subscription_id: int, grant_id: int) -> int:
    table = CreditGrant._meta.db_table
    row = first_row(
        f"UPDATE {table} SET credits_lapsed = credits + credits_adjusted - credits_used "  # noqa: S608
        "WHERE subscription_id = %s AND id = %s AND credits_lapsed = 0 "
        "AND credits + credits_adjusted > credits_used "
        "RETURNING credits_lapsed, expires_at",
        [subscription_id, grant_id],
    )
    if row is None:  # used up, or lapsed by another run
        return 0
    remainder, expires_at = row
    # Unique per grant: the database's backstop for "once".
    GrantAdjustment.objects.create(
        subscription_id=subscription_id,
        grant_id=grant_id,
        kind=GrantAdjustment.Kind.LAPSE,
        credits=-remainder,
        at=expires_at,
        reason="Expired: the remainder lapses.",
    )
    return 1


# --- Prices ----------------------------------------------------------------------------------


def _checked_price(*, owner: dict, same_currency_as, created_by: User, now=None, **price) -> dict:
    """A price's fields, checked: platform staff only, a known currency that is the one of
    ``same_currency_as`` (querysets of prices), prices at least 0 with at most 6 decimals,
    not backdated."""
    if not created_by.is_superuser:
        raise InvalidPrice("Only platform staff set prices.", field=next(iter(owner)))
    currency = price["currency"].upper()
    _check_currency(currency, InvalidPrice)
    for field in ("credit_price", "excess_price"):
        _check_amount(
            price[field],
            field=field,
            places=PRICE_DIGITS["decimal_places"],
            upper=MAX_PRICE,
            error=InvalidPrice,
        )
    if price["effective_from"] < (now or timezone.now()):
        raise InvalidPrice(
            "A price applies from now or later, never backdated.", field="effective_from"
        )
    for rows in same_currency_as:
        existing = rows.exclude(currency=currency).values_list("currency", flat=True).first()
        if existing:
            raise InvalidPrice(
                f"These prices are in {existing}; a currency does not change.", field="currency"
            )
    return {**owner, **price, "currency": currency, "created_by": created_by}


def check_plan_price(*, plan: str, **fields) -> dict:
    """A plan's price (``currency``, ``credit_price``, ``excess_price``, ``effective_from``,
    ``created_by``, optionally ``now``), checked (``_checked_price``); the plan's prices and
    its subscriptions' keep one currency."""
    if plan not in Subscription.Plan.values:
        raise InvalidPrice("No such plan.", field="plan", value=plan)
    same_currency_as = (
        PlanPrice.objects.filter(plan=plan),
        SubscriptionPrice.objects.filter(subscription__plan=plan),
    )
    return _checked_price(owner={"plan": plan}, same_currency_as=same_currency_as, **fields)


@transaction.atomic
def set_plan_price(**fields) -> PlanPrice:
    """A plan's price from ``effective_from`` on (``check_plan_price``)."""
    price = PlanPrice.objects.create(**check_plan_price(**fields))
    _audit_price(None, price)
    return price


def check_subscription_price(*, subscription: Subscription, **fields) -> dict:
    """A subscription's own price, checked as a plan's; its currency is its plan's."""
    owner = {"subscription": subscription}
    same_currency_as = (
        SubscriptionPrice.objects.filter(subscription=subscription),
        PlanPrice.objects.filter(plan=subscription.plan),
    )
    return _checked_price(owner=owner, same_currency_as=same_currency_as, **fields)


@transaction.atomic
def set_subscription_price(**fields) -> SubscriptionPrice:
    """A subscription's own price from ``effective_from`` on, overriding its plan's
    (``check_subscription_price``): a subscription admin reads prices, never sets them."""
    price = SubscriptionPrice.objects.create(**check_subscription_price(**fields))
    _audit_price(price.subscription, price)
    return price


def _audit_price(subscription, price) -> None:
    fields = ("currency", "credit_price", "excess_price", "effective_from")
    _audit_new(subscription, price.created_by, "price.set", price, fields)


def _audit_new(subscription, actor, action: str, obj, fields) -> None:
    """The audit event of a new, append-only row: its ``fields`` from nothing."""
    changes = {name: (None, getattr(obj, name)) for name in fields}
    record_audit_event(
        subscription=subscription, actor=actor, action=action, obj=obj, changes=changes
    )
