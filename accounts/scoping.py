"""The one scoping layer for accounts: what each person may see.

Roles, from widest to narrowest:

* platform superusers see everything;
* a subscription admin sees their subscriptions and those subscriptions' sub-accounts;
* a project manager sees the environments they manage (and the people working there);
* a member sees their own things.

Every ``visible_to(user)`` returns a lazy queryset built from subqueries, so scoping adds no
round trips: it becomes part of the one SQL query that reads the data.
"""

from django.apps import apps
from django.db import models

# ``accounts.models`` builds its managers from these querysets, so the models they filter are
# looked up in Django's registry (as string foreign keys are) rather than imported.

ADMIN = "subscription_admin"
PROJECT_MANAGER = "project_manager"


def _membership_model():
    return apps.get_model("accounts", "Membership")


def administered_subscription_ids(user) -> models.QuerySet:
    """Ids of the subscriptions ``user`` administers, their sub-accounts included."""
    Subscription = apps.get_model("accounts", "Subscription")

    direct = _membership_model().objects.filter(user=user, role=ADMIN).values("subscription_id")
    return Subscription.objects.filter(
        models.Q(pk__in=direct) | models.Q(parent_id__in=direct)
    ).values("pk")


def managed_environment_ids(user) -> models.QuerySet:
    """Ids of the environments where ``user`` sees everyone's usage: managed or administered."""
    Environment = apps.get_model("accounts", "Environment")

    managed = (
        _membership_model().objects.filter(user=user, role=PROJECT_MANAGER).values("environment_id")
    )
    return Environment.objects.filter(
        models.Q(pk__in=managed)
        | models.Q(project__subscription_id__in=administered_subscription_ids(user))
    ).values("pk")


def _is_anonymous(user) -> bool:
    return user is None or not user.is_authenticated


class ScopedQuerySet(models.QuerySet):
    def visible_to(self, user) -> models.QuerySet:
        if _is_anonymous(user):
            return self.none()
        if user.is_superuser:
            return self.all()
        return self.filter(self.visibility(user))

    def visibility(self, user) -> models.Q:  # pragma: no cover - abstract
        raise NotImplementedError


class SubscriptionQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        belongs = _membership_model().objects.filter(user=user).values("subscription_id")
        return models.Q(pk__in=administered_subscription_ids(user)) | models.Q(pk__in=belongs)

    def administered_by(self, user) -> models.QuerySet:
        if _is_anonymous(user):
            return self.none()
        if user.is_superuser:
            return self.all()
        return self.filter(pk__in=administered_subscription_ids(user))


class ProjectQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        works_in = _membership_model().objects.filter(user=user).values("environment__project_id")
        return models.Q(subscription_id__in=administered_subscription_ids(user)) | models.Q(
            pk__in=works_in
        )


class EnvironmentQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        works_in = _membership_model().objects.filter(user=user).values("environment_id")
        return models.Q(pk__in=managed_environment_ids(user)) | models.Q(pk__in=works_in)

    def managed_by(self, user) -> models.QuerySet:
        """Environments where ``user`` sees everyone's usage (project manager or admin)."""
        if _is_anonymous(user):
            return self.none()
        if user.is_superuser:
            return self.all()
        return self.filter(pk__in=managed_environment_ids(user))


class MembershipQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        return (
            models.Q(subscription_id__in=administered_subscription_ids(user))
            | models.Q(environment_id__in=managed_environment_ids(user))
            | models.Q(user=user)
        )


class UserQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        TeamMembership = apps.get_model("accounts", "TeamMembership")

        colleagues = (
            _membership_model()
            .objects.filter(
                models.Q(subscription_id__in=administered_subscription_ids(user))
                | models.Q(environment_id__in=managed_environment_ids(user))
            )
            .values("user_id")
        )
        teammates = TeamMembership.objects.filter(
            subscription_id__in=administered_subscription_ids(user)
        ).values("user_id")
        return models.Q(pk__in=colleagues) | models.Q(pk__in=teammates) | models.Q(pk=user.pk)


class TeamQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        TeamMembership = apps.get_model("accounts", "TeamMembership")

        own_teams = TeamMembership.objects.filter(user=user).values("team_id")
        return models.Q(subscription_id__in=administered_subscription_ids(user)) | models.Q(
            pk__in=own_teams
        )


class ApiKeyQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        return models.Q(subscription_id__in=administered_subscription_ids(user))
