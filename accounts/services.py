"""Writes for accounts: memberships, admin access and API keys."""

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from .models import ApiKey, Environment, Membership, Role, Subscription, User

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


def create_api_key(
    *,
    subscription: Subscription,
    name: str,
    environment: Environment | None = None,
    created_by: User | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored and never shown again."""
    api_key = ApiKey(
        subscription=subscription, name=name, environment=environment, created_by=created_by
    )
    api_key.full_clean(exclude=["id", "prefix", "hashed_key"])
    secret = ApiKey.objects.assign_key(api_key)
    api_key.save()
    return api_key, secret


def revoke_api_key(*, api_key: ApiKey) -> ApiKey:
    """Revoke at once; revocation cannot be undone."""
    if not api_key.revoked:
        api_key.revoked = True
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked", "revoked_at"])
    return api_key
