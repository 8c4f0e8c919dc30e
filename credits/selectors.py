"""Reads for credits: balances and limits as people and machines see them."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import F, Q, Sum
from django.utils import timezone

from accounts.models import Environment, Subscription, TeamMembership, User

from .models import BillingPeriod, CreditGrant, CreditLimit, TeamPeriodUsage, UserPeriodUsage
from .periods import days_until_reset, local_date, period_bounds
from .rollups import MONTH, narrowest_rollup

ZERO = Decimal("0.0000")
# Grants expiring this soon are shown as expiring (balance, dashboard).
EXPIRING_WITHIN = timedelta(days=7)


@dataclass(frozen=True)
class GrantStatus:
    """The subscription's grants at an instant: credits drawn from them this period, what the
    active ones have left, and how much of that expires within ``EXPIRING_WITHIN``."""

    used: Decimal
    remaining: Decimal
    expiring_soon: Decimal


@dataclass(frozen=True)
class LimitStatus:
    limit: Decimal | None
    used: Decimal

    @property
    def remaining(self) -> Decimal | None:
        return None if self.limit is None else max(ZERO, self.limit - self.used)


@dataclass(frozen=True)
class Balance:
    subscription: Subscription
    period_start: datetime
    period_end: datetime
    next_reset: datetime
    days_until_reset: int
    base_allocation: Decimal
    used: Decimal
    excess_allowance: Decimal
    excess_used: Decimal
    limit_mode: str
    grants: GrantStatus = GrantStatus(ZERO, ZERO, ZERO)
    environment_used: Decimal | None = None
    user: LimitStatus | None = None
    team: LimitStatus | None = None

    @property
    def remaining(self) -> Decimal:
        return max(ZERO, self.base_allocation - self.used)

    @property
    def base_used(self) -> Decimal:
        """Credits of the base allocation used: the total less grants and excess."""
        return self.used - self.grants.used - self.excess_used

    @property
    def base_remaining(self) -> Decimal:
        return max(ZERO, self.base_allocation - self.base_used)

    @property
    def excess_remaining(self) -> Decimal:
        if self.limit_mode != Subscription.LimitMode.SOFT:
            return ZERO
        return max(ZERO, self.excess_allowance - self.excess_used)

    @property
    def utilisation_percent(self) -> Decimal:
        """Share of the base allocation used, in percent with two places (may exceed 100)."""
        if not self.base_allocation:
            return Decimal("0.00")
        return (self.used * 100 / self.base_allocation).quantize(Decimal("0.01"))


def balance(
    *,
    subscription: Subscription,
    at: datetime | None = None,
    environment: Environment | None = None,
    user: User | None = None,
) -> Balance:
    """The subscription's balance in the period containing ``at`` (default now).

    Reads the period's counters, never the ledger; a period nobody has charged yet reads as
    zero usage without being created.
    """
    at = at or timezone.now()
    bounds = period_bounds(at, subscription.zone)
    period = BillingPeriod.objects.filter(subscription=subscription, start=bounds.start).first()
    environment_used = None
    if environment is not None:
        environment_used = _environment_used(subscription, period, environment)
    return Balance(
        subscription=subscription,
        period_start=bounds.start,
        period_end=bounds.end,
        next_reset=bounds.end,
        days_until_reset=days_until_reset(at, subscription.zone),
        base_allocation=subscription.base_allocation,
        used=period.credits_used if period else ZERO,
        excess_allowance=subscription.excess_allowance,
        excess_used=period.excess_used if period else ZERO,
        limit_mode=subscription.limit_mode,
        grants=grant_status(subscription=subscription, period=period, at=at),
        environment_used=environment_used,
        user=_user_status(subscription, period, user) if user else None,
        team=_team_status(subscription, period, user) if user else None,
    )


def grant_status(*, subscription: Subscription, period, at: datetime) -> GrantStatus:
    """The grants of a subscription the caller resolved through ``visible_to``: one query."""
    active = Q(effective_at__lte=at) & (Q(expires_at__isnull=True) | Q(expires_at__gt=at))
    left = F("credits") + F("credits_adjusted") - F("credits_used") - F("credits_lapsed")
    totals = CreditGrant.objects.filter(active, subscription=subscription).aggregate(
        remaining=Sum(left),
        expiring_soon=Sum(left, filter=Q(expires_at__lte=at + EXPIRING_WITHIN)),
    )
    return GrantStatus(
        used=period.grant_used if period else ZERO,
        remaining=totals["remaining"] or ZERO,
        expiring_soon=totals["expiring_soon"] or ZERO,
    )


def _user_status(subscription, period, user) -> LimitStatus:
    return _limit_status(subscription, period, UserPeriodUsage, user_id=user.pk)


def _team_status(subscription, period, user) -> LimitStatus | None:
    team_id = TeamMembership.objects.team_id_of(subscription=subscription, user=user)
    if team_id is None:
        return None
    return _limit_status(subscription, period, TeamPeriodUsage, team_id=team_id)


def _limit_status(subscription, period, usage_model, **owner) -> LimitStatus:
    """The limit set for one user or team (``user_id=`` or ``team_id=``) and its use."""
    limit = (
        CreditLimit.objects.filter(subscription=subscription, **owner)
        .values_list("credits", flat=True)
        .first()
    )
    used = None
    if period:
        used = (
            usage_model.objects.filter(subscription=subscription, period=period, **owner)
            .values_list("credits_used", flat=True)
            .first()
        )
    return LimitStatus(limit=limit, used=used or ZERO)


def _environment_used(subscription, period, environment) -> Decimal:
    """The period's credits in one environment: its monthly row of the narrowest rollup keyed
    by environment (one row per person there), like every other usage figure."""
    if period is None:
        return ZERO
    rollup = narrowest_rollup({"environment"}, whole_subscriptions=True)
    rows = rollup.model.objects.filter(
        subscription=subscription,
        grain=MONTH,
        day=local_date(period.start, subscription.zone),
        environment=environment,
    )
    return rows.aggregate(total=Sum("credits"))["total"] or ZERO
