"""The one scoping layer for credits data (see ``accounts.scoping`` for the vocabulary)."""

from django.db import models

from accounts.models import Environment, Subscription
from accounts.scoping import AdministeredQuerySet, ScopedQuerySet, api_key_of


class UsageQuerySet(ScopedQuerySet):
    """Ledger rows and the rollups keyed by environment and user (``DailyUsage``,
    ``PersonRollup``): admins see their subscriptions, project managers their environments,
    members their own usage; an API key its subscription, or its environment.

    Rollups carry totals: the environment and subscription figures of every plan are sums of
    them, so they are not plan gated. Grouping them by person is a Pro, Premium and Scale
    feature, refused where a grouping is chosen (``reports.catalogue``'s ``per_member``, the
    member pages); the ledger, which lists each person's events, is gated here.
    """

    def visibility(self, user) -> models.Q:
        return (
            models.Q(subscription_id__in=Subscription.objects.administered_by(user).values("pk"))
            | models.Q(environment_id__in=Environment.objects.managed_by(user).values("pk"))
            | models.Q(user=user)
        )

    def key_visibility(self, api_key) -> models.Q:
        where = models.Q(subscription_id=api_key.subscription_id)
        if api_key.environment_id:
            where &= models.Q(environment_id=api_key.environment_id)
        return where


class SubscriptionUsageQuerySet(AdministeredQuerySet):
    """The rollups that do not name the user (``AgentRollup``, ``ModelRollup``,
    ``ProductRollup``, which names the environment, and ``SubscriptionRollup``) and their
    session claims: nobody narrower than an admin could be scoped to them. An API key
    restricted to one environment sees none of their rows."""

    def key_visibility(self, api_key) -> models.Q:
        if api_key.environment_id:
            return models.Q(pk__in=[])
        return models.Q(subscription_id=api_key.subscription_id)


class AgentQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        from accounts.models import Membership

        belongs = Membership.objects.filter(user=user).values("subscription_id")
        administered = Subscription.objects.administered_by(user).values("pk")
        return models.Q(subscription_id__in=administered) | models.Q(subscription_id__in=belongs)


class AlertRuleQuerySet(AdministeredQuerySet):
    """Admins see every rule of their subscriptions; a project manager the rules they own on
    environments they still manage. Rules are people's: no API key sees one."""

    def visibility(self, user) -> models.Q:
        managed = Environment.objects.managed_by(user).values("pk")
        return super().visibility(user) | models.Q(owner=user, environment_id__in=managed)

    def key_visibility(self, api_key) -> models.Q:
        return models.Q(pk__in=[])


class ProductQuerySet(models.QuerySet):
    """The product catalogue is shared by every subscription: administered (and audited) by
    platform staff and the admins alike, owned by no subscription."""

    subscription_lookup = None

    def administered_by(self, user) -> models.QuerySet:
        return self.all()


class AppendOnly:
    """A queryset whose rows are never edited or deleted in bulk either (``refusal`` says
    what to do instead)."""

    refusal = "These rows are append-only; add a new row instead."

    def update(self, **kwargs):
        raise TypeError(self.refusal)

    def delete(self):
        raise TypeError(self.refusal)

    update.queryset_only = True
    delete.queryset_only = True


class CreditEventQuerySet(AppendOnly, UsageQuerySet):
    """The ledger is append-only: bulk updates and deletes are refused here too."""

    # Each row names a person: on a Free plan nobody sees another person's events.
    plan_gated = True
    refusal = "Credit events are append-only; record an adjustment instead."


class AppendOnlyQuerySet(AppendOnly, AdministeredQuerySet):
    """Subscription prices, grants and grant adjustments: the subscription's admins (and its
    API keys) read them; a grant's counters change by conditional SQL (``credits.charging``,
    ``credits.grants``)."""


class PlanPriceQuerySet(AppendOnly, models.QuerySet):
    """Plan prices are the public price list: everyone signed in (and every live API key) reads
    them; only platform staff administer them."""

    subscription_lookup = None

    def visible_to(self, principal) -> models.QuerySet:
        api_key = api_key_of(principal)
        if api_key is not None:
            return self.none() if api_key.revoked else self.all()
        if principal is None or not principal.is_authenticated:
            return self.none()
        return self.all()

    def administered_by(self, user) -> models.QuerySet:
        if user is not None and user.is_authenticated and user.is_superuser:
            return self.all()
        return self.none()
