"""Reads for credits: balances and limits as people and machines see them."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import F, Q, Sum
from django.utils import timezone

from accounts.models import ApiKey, Environment, Subscription, TeamMembership, User

from .models import (
    ApiKeyPeriodUsage,
    BillingPeriod,
    CreditGrant,
    CreditLimit,
    TeamPeriodUsage,
    UserPeriodUsage,
)
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
class KeyBudgetStatus(LimitStatus):
    """An API key's budget (its ``limit``) and what the key used in the period."""

    id: str = ""  # the key's prefix, as the API names keys


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
    api_key: KeyBudgetStatus | None = None

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
    api_key: ApiKey | None = None,
) -> Balance:
    """The subscription's balance in the period containing ``at`` (default now), with the
    budget of ``api_key`` (the calling key) when it has one.

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
        api_key=_key_status(subscription, period, api_key),
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


def _key_status(subscription, period, api_key) -> KeyBudgetStatus | None:
    if api_key is None or api_key.credit_budget is None:
        return None
    used = _used(subscription, period, ApiKeyPeriodUsage, api_key_id=api_key.pk)
    return KeyBudgetStatus(limit=api_key.credit_budget, used=used, id=api_key.prefix)


def _limit_status(subscription, period, usage_model, **owner) -> LimitStatus:
    """The limit set for one user or team (``user_id=`` or ``team_id=``) and its use."""
    limit = (
        CreditLimit.objects.filter(subscription=subscription, **owner)
        .values_list("credits", flat=True)
        .first()
    )
    return LimitStatus(limit=limit, used=_used(subscription, period, usage_model, **owner))


def _used(subscription, period, usage_model, **owner) -> Decimal:
    """One owner's counter in ``period`` (none yet, or no period: nothing used)."""
    used = None
    if period:
        used = (
            usage_model.objects.filter(subscription=subscription, period=period, **owner)
            .values_list("credits_used", flat=True)
            .first()
        )
    return used or ZERO


def _environment_used(subscription, period, environment) -> Decimal:
    if period is None:
        return ZERO
    period.subscription = subscription  # the one loaded already: its zone costs no query
    return environments_used(periods=[period], environment_ids=[environment.pk]).get(
        (period.pk, environment.pk), ZERO
    )


def environments_used(*, periods, environment_ids) -> dict[tuple[int, int], Decimal]:
    """Each environment's credits in these billing periods (their ``subscription`` loaded), by
    (period id, environment id), in one query: the periods' monthly rows of the narrowest
    rollup keyed by environment, like every other usage figure.
    The caller resolved the periods and environments through the scoping layer, or reads as
    the system (the alert rules)."""
    months = {
        (period.subscription_id, local_date(period.start, period.subscription.zone)): period.pk
        for period in periods
    }
    if not months or not environment_ids:
        return {}
    rollup = narrowest_rollup({"environment"}, whole_subscriptions=True)
    rows = (
        rollup.model.objects.filter(
            grain=MONTH,
            subscription_id__in={subscription_id for subscription_id, _ in months},
            day__in={day for _, day in months},
            environment_id__in=environment_ids,
        )
        .values_list("subscription_id", "day", "environment_id")
        .annotate(total=Sum("credits"))
        .order_by()
    )
    return {
        (months[subscription_id, day], environment_id): total
        for subscription_id, day, environment_id, total in rows
        if (subscription_id, day) in months
    }
