"""Who hears of a subscription's alerts by email."""

from accounts.models import Role, Subscription, User


def admin_emails(subscription: Subscription) -> list[str]:
    """The active admins of ``subscription`` itself (a parent's admins are not emailed)."""
    return list(
        User.objects.filter(
            is_active=True,
            memberships__subscription=subscription,
            memberships__role=Role.SUBSCRIPTION_ADMIN,
        )
        .order_by("email")
        .values_list("email", flat=True)
        .distinct()
    )
