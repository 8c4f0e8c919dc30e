"""Writes for accounts: memberships, admin access and API keys."""

import logging
from decimal import Decimal

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from core.errors import DomainError
from core.money import is_storable_credits

from .audit import record_audit_event
from .login_throttle import authenticate_without_request
from .models import ApiKey, Environment, Membership, Role, Subscription, User
from .signals import api_key_revoked

logger = logging.getLogger(__name__)


SUBSCRIPTION_ADMINS_GROUP = "Subscription admins"


def sync_admin_access(*, user: User) -> None:
    """Give subscription admins the Django admin (staff + group) and take it from others.

    Platform staff (superusers) keep their access whatever their memberships.
    """
    group = Group.objects.get(name=SUBSCRIPTION_ADMINS_GROUP)
    is_admin = Membership.objects.filter(user=user, role=Role.SUBSCRIPTION_ADMIN).exists()
    if is_admin:
        user.groups.add(group)
    else:
        user.groups.remove(group)
    if not user.is_superuser and user.is_staff != is_admin:
        user.is_staff = is_admin
        user.save(update_fields=["is_staff"])


@transaction.atomic
def add_membership(
    *,
    user: User,
    subscription: Subscription,
    role: str,
    environment: Environment | None = None,
) -> Membership:
    membership = Membership(
        user=user, subscription=subscription, role=role, environment=environment
    )
    membership.full_clean()
    membership.save()
    sync_admin_access(user=user)
    return membership


@transaction.atomic
def remove_membership(*, membership: Membership) -> None:
    user = membership.user
    membership.delete()
    sync_admin_access(user=user)


class InvalidBudget(DomainError):
    code = "invalid_budget"
    message = "A budget is a number of credits of at least 0 with at most 4 decimal places."


def _check_budget(credit_budget: Decimal | None) -> None:
    if credit_budget is not None and not is_storable_credits(credit_budget):
        raise InvalidBudget(credit_budget=str(credit_budget))


@transaction.atomic
def create_api_key(
    *,
    subscription: Subscription,
    name: str,
    environment: Environment | None = None,
    created_by: User | None = None,
    credit_budget: Decimal | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored and never shown again."""
    _check_budget(credit_budget)
    api_key = ApiKey(
        subscription=subscription,
        name=name,
        environment=environment,
        created_by=created_by,
        credit_budget=credit_budget,
    )
    api_key.full_clean(exclude=["id", "prefix", "hashed_key"])
    secret = ApiKey.objects.assign_key(api_key)
    api_key.save()
    record_audit_event(
        subscription=subscription,
        actor=created_by,
        action="api_key.created",
        obj=api_key,
        changes={
            "name": (None, name),
            "prefix": (None, api_key.prefix),
            "environment": (None, environment),
            **({"credit_budget": (None, credit_budget)} if credit_budget is not None else {}),
        },
    )
    return api_key, secret


@transaction.atomic
def set_api_key_budget(
    *, api_key: ApiKey, credit_budget: Decimal | None, actor: User | None = None
) -> ApiKey:
    """Cap what ``api_key`` may spend in each billing period (``None`` lifts the cap).

    Like a user's limit, recording compares it with the key's usage already recorded in the
    current period, so it applies from the next event on: a budget below that usage blocks the
    key until the period resets, and nothing recorded is rewritten.
    """
    _check_budget(credit_budget)
    before = api_key.credit_budget
    api_key.credit_budget = credit_budget
    api_key.save(update_fields=["credit_budget"])
    if before != credit_budget:
        record_audit_event(
            subscription=api_key.subscription,
            actor=actor,
            action="api_key.budget_set" if credit_budget is not None else "api_key.budget_removed",
            obj=api_key,
            changes={"credit_budget": (before, credit_budget)},
        )
    logger.info(
        "event=api_key_budget_set subscription_id=%s api_key=%s credit_budget=%s",
        api_key.subscription_id,
        api_key.prefix,
        credit_budget,
    )
    return api_key


@transaction.atomic
def revoke_api_key(*, api_key: ApiKey, actor: User | None = None) -> ApiKey:
    """Revoke at once; revocation cannot be undone."""
    if not api_key.revoked:
        api_key.revoked = True
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked", "revoked_at"])
        record_audit_event(
            subscription=api_key.subscription,
            actor=actor,
            action="api_key.revoked",
            obj=api_key,
            changes={"revoked": (False, True)},
        )
        api_key_revoked.send(sender=ApiKey, api_key=api_key, now=api_key.revoked_at)
    return api_key


# --- People's API tokens ---------------------------------------------------------------------


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    message = "Unable to log in with these credentials."


def obtain_api_token(*, email: str, password: str) -> Token:
    """The personal API token of the user with this email (any case) and password.

    Authentication goes through Django's model backend, so inactive users are refused and an
    unknown email costs as much time as a wrong password; the endpoint's throttle, not the login
    forms' lockout (``login_throttle``), limits guessing here. One token per user: asking again
    returns it.
    """
    user = authenticate_without_request(email=email, password=password)
    if user is None:
        logger.info("event=token_refused reason=invalid_credentials")
        raise InvalidCredentials()
    token, created = Token.objects.get_or_create(user=user)
    if created:
        logger.info("event=token_created user_id=%s", user.pk)
    return token


# --- Subscription settings -------------------------------------------------------------------


class InvalidLimitSettings(DomainError):
    code = "invalid_limit_settings"
    message = "These limit settings are not valid."


@transaction.atomic
def update_limit_settings(
    *,
    subscription: Subscription,
    limit_mode: str,
    excess_allowance: Decimal,
    actor: User | None = None,
) -> Subscription:
    """Change how the subscription's allocation is enforced.

    The recording service reads these settings inside each event's transaction, so a change
    applies from the next event on to the usage already recorded in the period; nothing already
    recorded is rewritten.
    """
    if limit_mode not in Subscription.LimitMode.values:
        raise InvalidLimitSettings(limit_mode=f"{limit_mode!r} is not a limit mode.")
    if not is_storable_credits(excess_allowance):
        raise InvalidLimitSettings(
            excess_allowance="Give a decimal of at least 0 with at most 4 decimal places."
        )
    before = {
        "limit_mode": subscription.limit_mode,
        "excess_allowance": subscription.excess_allowance,
    }
    subscription.limit_mode = limit_mode
    subscription.excess_allowance = excess_allowance
    subscription.save(update_fields=["limit_mode", "excess_allowance"])
    changes = {
        name: (before[name], getattr(subscription, name))
        for name in before
        if before[name] != getattr(subscription, name)
    }
    if changes:
        record_audit_event(
            subscription=subscription,
            actor=actor,
            action="limit_settings.changed",
            obj=subscription,
            changes=changes,
        )
    logger.info(
        "event=limit_settings_changed subscription_id=%s limit_mode=%s excess_allowance=%s",
        subscription.pk,
        limit_mode,
        excess_allowance,
    )
    return subscription
