"""The one scoping layer for credits data (see ``accounts.scoping`` for the roles)."""

from django.db import models

from accounts.scoping import (
    ScopedQuerySet,
    administered_subscription_ids,
    managed_environment_ids,
)


class UsageQuerySet(ScopedQuerySet):
    """Ledger rows and the rollups keyed by environment and user (``DailyUsage``,
    ``PersonRollup``): admins see their subscriptions, project managers their environments,
    members their own usage."""

    def visibility(self, user) -> models.Q:
        return (
            models.Q(subscription_id__in=administered_subscription_ids(user))
            | models.Q(environment_id__in=managed_environment_ids(user))
            | models.Q(user=user)
        )


class AdministeredQuerySet(ScopedQuerySet):
    """Subscription-level records that only admins see: periods, limits, alerts, and the
    rollups that name neither environment nor user (``AgentRollup``, ``ModelRollup``,
    ``ProductRollup``, ``SubscriptionRollup``), which nobody narrower than an admin could be
    scoped to."""

    def visibility(self, user) -> models.Q:
        return models.Q(subscription_id__in=administered_subscription_ids(user))


class AgentQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        from accounts.models import Membership

        belongs = Membership.objects.filter(user=user).values("subscription_id")
        return models.Q(subscription_id__in=administered_subscription_ids(user)) | models.Q(
            subscription_id__in=belongs
        )


class CreditEventQuerySet(UsageQuerySet):
    """The ledger is append-only: bulk updates and deletes are refused here too."""

    def update(self, **kwargs):
        raise TypeError("Credit events are append-only; record an adjustment instead.")

    def delete(self):
        raise TypeError("Credit events are append-only; record an adjustment instead.")

    update.queryset_only = True
    delete.queryset_only = True
