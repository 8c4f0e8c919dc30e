"""Reads for credits: balances and limits as people and machines see them."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import NamedTuple

from django.db import connection
from django.db.models import Sum
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
    zero usage without being created. The counters, grants, limits and the key's use come
    in one statement; an environment's usage is read from the rollups, as every usage figure.
    """
    at = at or timezone.now()
    bounds = period_bounds(at, subscription.zone)
    with connection.cursor() as cursor:
        cursor.execute(
            _balance_sql(),
            {
                "subscription": subscription.pk,
                "start": bounds.start,
                "at": at,
                "expiring_by": at + EXPIRING_WITHIN,
                "user": user.pk if user else None,
                "api_key": api_key.pk if api_key else None,
            },
        )
        row = _BalanceRow(*cursor.fetchone())
    environment_used = None
    if environment is not None:
        environment_used = _environment_used(subscription, row.period(subscription), environment)
    return Balance(
        subscription=subscription,
        period_start=bounds.start,
        period_end=bounds.end,
        next_reset=bounds.end,
        days_until_reset=days_until_reset(at, subscription.zone),
        base_allocation=subscription.base_allocation,
        used=row.credits_used or ZERO,
        excess_allowance=subscription.excess_allowance,
        excess_used=row.excess_used or ZERO,
        limit_mode=subscription.limit_mode,
        grants=GrantStatus(
            used=row.grant_used or ZERO,
            remaining=row.grants_remaining or ZERO,
            expiring_soon=row.grants_expiring_soon or ZERO,
        ),
        environment_used=environment_used,
        user=LimitStatus(limit=row.user_limit, used=row.user_used or ZERO) if user else None,
        team=(
            LimitStatus(limit=row.team_limit, used=row.team_used or ZERO)
            if user and row.team_id is not None
            else None
        ),
        api_key=(
            KeyBudgetStatus(
                limit=api_key.credit_budget, used=row.api_key_used or ZERO, id=api_key.prefix
            )
            if api_key is not None and api_key.credit_budget is not None
            else None
        ),
    )


class _BalanceRow(NamedTuple):
    period_id: int | None
    period_start: datetime | None
    period_end: datetime | None
    credits_used: Decimal | None
    grant_used: Decimal | None
    excess_used: Decimal | None
    grants_remaining: Decimal | None
    grants_expiring_soon: Decimal | None
    user_limit: Decimal | None
    user_used: Decimal | None
    team_id: int | None
    team_limit: Decimal | None
    team_used: Decimal | None
    api_key_used: Decimal | None

    def period(self, subscription: Subscription) -> BillingPeriod | None:
        if self.period_id is None:
            return None
        return BillingPeriod(
            id=self.period_id,
            subscription=subscription,
            start=self.period_start,
            end=self.period_end,
            credits_used=self.credits_used,
            grant_used=self.grant_used,
            excess_used=self.excess_used,
        )


@cache
def _balance_sql() -> str:
    """One statement for a balance: the period's counters, the grants active at ``at``, the
    user's and their team's limits and use, and the key's use, each read by the subscription
    the caller resolved through ``visible_to`` (and the user, the key it resolved). A missing
    period, user, team or key reads as NULL."""
    tables = {  # named one by one: the scoping layer's test reads which tables these are
        "period": BillingPeriod._meta.db_table,
        "grant": CreditGrant._meta.db_table,
        "limit": CreditLimit._meta.db_table,
        "user_usage": UserPeriodUsage._meta.db_table,
        "team_usage": TeamPeriodUsage._meta.db_table,
        "key_usage": ApiKeyPeriodUsage._meta.db_table,
        "membership": TeamMembership._meta.db_table,
    }
    return """
        SELECT period.id, period.start, period."end", period.credits_used, period.grant_used,
            period.excess_used, grants.remaining, grants.expiring_soon,
            (SELECT user_limit.credits FROM {limit} user_limit
             WHERE user_limit.subscription_id = %(subscription)s
               AND user_limit.user_id = %(user)s ORDER BY user_limit.id LIMIT 1),
            (SELECT user_usage.credits_used FROM {user_usage} user_usage
             WHERE user_usage.subscription_id = %(subscription)s
               AND user_usage.period_id = period.id AND user_usage.user_id = %(user)s
             LIMIT 1),
            team.team_id,
            (SELECT team_limit.credits FROM {limit} team_limit
             WHERE team_limit.subscription_id = %(subscription)s
               AND team_limit.team_id = team.team_id ORDER BY team_limit.id LIMIT 1),
            (SELECT team_usage.credits_used FROM {team_usage} team_usage
             WHERE team_usage.subscription_id = %(subscription)s
               AND team_usage.period_id = period.id AND team_usage.team_id = team.team_id
             LIMIT 1),
            (SELECT key_usage.credits_used FROM {key_usage} key_usage
             WHERE key_usage.subscription_id = %(subscription)s
               AND key_usage.period_id = period.id AND key_usage.api_key_id = %(api_key)s
             LIMIT 1)
        FROM (SELECT 1) AS one
        LEFT JOIN {period} period
            ON period.subscription_id = %(subscription)s AND period.start = %(start)s
        LEFT JOIN LATERAL (
            SELECT membership.team_id FROM {membership} membership
            WHERE membership.subscription_id = %(subscription)s
              AND membership.user_id = %(user)s
            ORDER BY membership.id LIMIT 1
        ) team ON true
        CROSS JOIN LATERAL (
            SELECT
                sum(left_over) AS remaining,
                sum(left_over) FILTER (WHERE expires_at <= %(expiring_by)s) AS expiring_soon
            FROM (
                SELECT grant_row.expires_at,
                    grant_row.credits + grant_row.credits_adjusted - grant_row.credits_used
                    - grant_row.credits_lapsed AS left_over
                FROM {grant} grant_row
                WHERE grant_row.subscription_id = %(subscription)s
                  AND grant_row.effective_at <= %(at)s
                  AND (grant_row.expires_at IS NULL OR grant_row.expires_at > %(at)s)
            ) active
        ) grants
    """.format(**tables)  # noqa: S608 - table names from the models


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
