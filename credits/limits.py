"""Per-user and per-team credit limits: setting them, removing them, reading them with usage.

A limit caps what one user (or one team) may spend in each billing period. The recording
service reads the limit inside each event's transaction and checks it against the counter of
the current period, so a change applies from that moment on to the usage already recorded:
lowering a limit below what was used blocks further use until the period resets, and nothing
already recorded is rewritten.
"""

import logging
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import DecimalField, F, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Greatest

from accounts.audit import record_audit_event
from accounts.models import Membership, Subscription, Team, User
from core.errors import DomainError
from core.money import CREDIT_DIGITS, is_storable_credits

from .errors import NotAMember
from .models import BillingPeriod, CreditLimit, TeamPeriodUsage, UserPeriodUsage
from .periods import period_bounds

logger = logging.getLogger(__name__)


class InvalidLimit(DomainError):
    code = "invalid_limit"
    message = "A limit is a number of credits of at least 0 with at most 4 decimal places."


class TeamNotInSubscription(DomainError):
    code = "not_found"
    message = "This team is not part of the subscription."


def _check_credits(credits: Decimal) -> None:
    if not is_storable_credits(credits):
        raise InvalidLimit(credits=str(credits))


@transaction.atomic
def set_user_limit(
    *, subscription: Subscription, user: User, credits: Decimal, actor: User | None = None
) -> CreditLimit:
    """Cap ``user``'s spending in each period of ``subscription`` (create or replace)."""
    _check_credits(credits)
    if not Membership.objects.filter(subscription=subscription, user=user).exists():
        raise NotAMember("This user is not a member of the subscription.", user=user.pk)
    return _set_limit(subscription=subscription, credits=credits, actor=actor, user=user)


@transaction.atomic
def set_team_limit(
    *, subscription: Subscription, team: Team, credits: Decimal, actor: User | None = None
) -> CreditLimit:
    """Cap ``team``'s spending in each period of ``subscription`` (create or replace)."""
    _check_credits(credits)
    if team.subscription_id != subscription.pk:
        raise TeamNotInSubscription(team=team.pk)
    return _set_limit(subscription=subscription, credits=credits, actor=actor, team=team)


def _set_limit(*, subscription: Subscription, credits: Decimal, actor, **owner) -> CreditLimit:
    """Create or replace the limit of the one user or team in ``owner``."""
    ((owner_name, owner_object),) = owner.items()
    before = _current_credits(subscription=subscription, **owner)
    limit, _ = CreditLimit.objects.update_or_create(
        subscription=subscription, **owner, defaults={"credits": credits}
    )
    _audit_limit(limit, actor=actor, before=before, after=credits)
    logger.info(
        "event=limit_set subscription_id=%s %s_id=%s credits=%s",
        subscription.pk,
        owner_name,
        owner_object.pk,
        credits,
    )
    return limit


@transaction.atomic
def remove_limit(*, limit: CreditLimit, actor: User | None = None) -> None:
    """Lift a limit: the user or team is bound by the subscription's allocation only."""
    _audit_limit(limit, actor=actor, before=limit.credits, after=None)
    limit.delete()
    logger.info(
        "event=limit_removed subscription_id=%s user_id=%s team_id=%s",
        limit.subscription_id,
        limit.user_id,
        limit.team_id,
    )


def _current_credits(*, subscription: Subscription, **owner) -> Decimal | None:
    return (
        CreditLimit.objects.filter(subscription=subscription, **owner)
        .values_list("credits", flat=True)
        .first()
    )


def _audit_limit(limit: CreditLimit, *, actor, before, after) -> None:
    """One row of the audit trail per change (setting the same value again is no change)."""
    if before == after:
        return
    record_audit_event(
        subscription=limit.subscription,
        actor=actor,
        action="limit.removed" if after is None else "limit.set",
        obj=limit,
        changes={"credits": (before, after)},
    )


def limits_with_usage(
    *, limits: QuerySet[CreditLimit], subscription: Subscription, now: datetime
) -> QuerySet[CreditLimit]:
    """``limits`` (of ``subscription``) with ``credits_used`` and ``remaining`` in the current
    period.

    Read-only: a period that has not been opened yet counts as nothing used.
    """
    period = BillingPeriod.objects.filter(
        subscription=subscription, start=period_bounds(now, subscription.zone).start
    ).values("pk")[:1]
    user_used = UserPeriodUsage.objects.filter(
        subscription=subscription, period_id=Subquery(period), user_id=OuterRef("user_id")
    ).values("credits_used")[:1]
    team_used = TeamPeriodUsage.objects.filter(
        subscription=subscription, period_id=Subquery(period), team_id=OuterRef("team_id")
    ).values("credits_used")[:1]
    zero = Value(Decimal(0), output_field=DecimalField(**CREDIT_DIGITS))
    return (
        limits.filter(subscription=subscription)
        .select_related("user", "team")
        .annotate(credits_used=Coalesce(Subquery(user_used), Subquery(team_used), zero))
        .annotate(remaining=Greatest(F("credits") - F("credits_used"), zero))
    )
