"""The one scoping layer: what each person or API key may see, and what each person administers.

The vocabulary, on every scoped queryset (``Model.objects.…``):

* ``visible_to(principal)``: the rows a person or an API key may read. Pages, reports,
  emails, exports and API views read through it.
* ``administered_by(user)``: the rows of the subscriptions ``user`` administers (their
  sub-accounts included), whatever else they may read. The admin site shows and edits these.
* ``Environment.objects.managed_by(user)``: the environments where ``user`` sees everyone's
  usage (project manager there, or admin of its subscription).

To administer is the subscription admin's role; to manage is seeing everyone's usage in an
environment. The subquery forms are ``….administered_by(user).values("pk")`` and
``….managed_by(user).values("pk")``.

People, from widest to narrowest:

* platform superusers see everything;
* a subscription admin sees their subscriptions and those subscriptions' sub-accounts;
* a project manager sees the environments they manage (and the people working there);
* a member sees their own things.

An API key (``accounts.authentication.KeyPrincipal``, or the ``ApiKey`` itself) acts for its
subscription, not for a person: it sees its subscription's rows, narrowed to its environment
when it has one (``key_visibility``). A revoked key sees nothing.

Per-member usage is a paid-plan feature (``Subscription.has_team_views``): on a Free plan the
querysets marked ``plan_gated`` (the ledger, whose rows each name a person) show nobody another
person's rows, in both modes, so no surface (page, export, admin) can list them. Totals stay
whole: the period counters (balances, limits, billing) and the rollups are not gated, and
grouping rollups by person is refused where the grouping is chosen (``per_member`` reports in
``reports.catalogue``, the member pages). Recording reads as the system. Platform superusers
are not gated.

Every rule is a lazy ``Q`` of subqueries, so scoping adds no round trips: it becomes part of
the one SQL query that reads the data.
"""

from django.apps import apps
from django.db import models

ADMIN = "subscription_admin"
PROJECT_MANAGER = "project_manager"


def _model(name: str):
    """Looked up in Django's registry, not imported: ``accounts.models`` builds its managers
    from these querysets."""
    return apps.get_model("accounts", name)


def _is_anonymous(user) -> bool:
    return user is None or not user.is_authenticated


def api_key_of(principal):
    """The API key ``principal`` acts with (a ``KeyPrincipal`` or the key), or None."""
    api_key_model = _model("ApiKey")
    if isinstance(principal, api_key_model):
        return principal
    api_key = getattr(principal, "api_key", None)
    return api_key if isinstance(api_key, api_key_model) else None


def _administered(user) -> models.QuerySet:
    return _model("Subscription").objects.administered_by(user).values("pk")


def _managed(user) -> models.QuerySet:
    return _model("Environment").objects.managed_by(user).values("pk")


def _in_environment(api_key, field: str = "environment_id") -> models.Q:
    """Rows of the key's environment, when the key is restricted to one."""
    return models.Q(**{field: api_key.environment_id}) if api_key.environment_id else models.Q()


class ScopedQuerySet(models.QuerySet):
    """A tenant model's queryset: ``visibility`` (people), ``key_visibility`` (API keys) and
    ``subscription_lookup`` (the path to the owning subscription, which ``administered_by``
    and the audit trail follow) are stated once per model."""

    subscription_lookup: str | None = "subscription"
    # Rows that name people (``user``): on a Free plan nobody sees another person's.
    plan_gated = False

    def visible_to(self, principal) -> models.QuerySet:
        api_key = api_key_of(principal)
        if api_key is not None:
            if api_key.revoked:
                return self.none()
            return self.filter(self.key_visibility(api_key) & self._team_views(None))
        if _is_anonymous(principal):
            return self.none()
        if principal.is_superuser:
            return self.all()
        return self.filter(self.visibility(principal) & self._team_views(principal))

    def administered_by(self, user) -> models.QuerySet:
        if _is_anonymous(user) or api_key_of(user) is not None:
            return self.none()
        if user.is_superuser:
            return self.all()
        return self.filter(self.administration(_administered(user)) & self._team_views(user))

    def administration(self, subscriptions: models.QuerySet) -> models.Q:
        """The rows belonging to ``subscriptions`` (a subquery of subscription ids)."""
        return models.Q(**{f"{self.subscription_lookup}__in": subscriptions})

    def visibility(self, user) -> models.Q:  # pragma: no cover - abstract
        raise NotImplementedError

    def key_visibility(self, api_key) -> models.Q:
        """By default a key sees its subscription's rows (none restricted to one environment)."""
        return models.Q(**{f"{self.subscription_lookup}": api_key.subscription_id})

    def _team_views(self, person) -> models.Q:
        """Other people's rows only on plans with per-member views; ``person``'s own rows and
        rows naming nobody (what an API key did alone) always."""
        if not self.plan_gated:
            return models.Q()
        subscription = _model("Subscription")
        paid = subscription.objects.exclude(plan=subscription.Plan.FREE).values("pk")
        own = models.Q(user__isnull=True) | (models.Q(user=person) if person else models.Q())
        return models.Q(subscription_id__in=paid) | own


class AdministeredQuerySet(ScopedQuerySet):
    """Subscription-level records that only the subscription's admins read."""

    def visibility(self, user) -> models.Q:
        return self.administration(_administered(user))


class SubscriptionQuerySet(ScopedQuerySet):
    subscription_lookup = "pk"

    def visibility(self, user) -> models.Q:
        belongs = _model("Membership").objects.filter(user=user).values("subscription_id")
        return models.Q(pk__in=_administered(user)) | models.Q(pk__in=belongs)

    def administered_by(self, user) -> models.QuerySet:
        """The subscriptions ``user`` administers, their sub-accounts included."""
        if _is_anonymous(user) or api_key_of(user) is not None:
            return self.none()
        if user.is_superuser:
            return self.all()
        direct = (
            _model("Membership").objects.filter(user=user, role=ADMIN).values("subscription_id")
        )
        return self.filter(models.Q(pk__in=direct) | models.Q(parent_id__in=direct))


class ProjectQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        works_in = _model("Membership").objects.filter(user=user).values("environment__project_id")
        return models.Q(subscription_id__in=_administered(user)) | models.Q(pk__in=works_in)

    def key_visibility(self, api_key) -> models.Q:
        where = models.Q(subscription_id=api_key.subscription_id)
        if api_key.environment_id:
            environment = _model("Environment").objects.filter(pk=api_key.environment_id)
            where &= models.Q(pk__in=environment.values("project_id"))
        return where


class EnvironmentQuerySet(ScopedQuerySet):
    subscription_lookup = "project__subscription"

    def visibility(self, user) -> models.Q:
        works_in = _model("Membership").objects.filter(user=user).values("environment_id")
        return models.Q(pk__in=_managed(user)) | models.Q(pk__in=works_in)

    def key_visibility(self, api_key) -> models.Q:
        return models.Q(project__subscription_id=api_key.subscription_id) & _in_environment(
            api_key, "pk"
        )

    def managed_by(self, user) -> models.QuerySet:
        """Environments where ``user`` sees everyone's usage (project manager or admin)."""
        if _is_anonymous(user) or api_key_of(user) is not None:
            return self.none()
        if user.is_superuser:
            return self.all()
        managed = (
            _model("Membership")
            .objects.filter(user=user, role=PROJECT_MANAGER)
            .values("environment_id")
        )
        return self.filter(
            models.Q(pk__in=managed) | models.Q(project__subscription_id__in=_administered(user))
        )


class MembershipQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        return (
            models.Q(subscription_id__in=_administered(user))
            | models.Q(environment_id__in=_managed(user))
            | models.Q(user=user)
        )

    def key_visibility(self, api_key) -> models.Q:
        """A key restricted to an environment sees the roles there and the subscription-wide
        ones (admins work in every environment)."""
        where = models.Q()
        if api_key.environment_id:
            where = models.Q(environment_id=api_key.environment_id) | models.Q(
                environment__isnull=True
            )
        return models.Q(subscription_id=api_key.subscription_id) & where


class UserQuerySet(ScopedQuerySet):
    # A person belongs to every subscription they hold a role in.
    subscription_lookup = "memberships__subscription"

    def visibility(self, user) -> models.Q:
        colleagues = (
            _model("Membership")
            .objects.filter(
                models.Q(subscription_id__in=_administered(user))
                | models.Q(environment_id__in=_managed(user))
            )
            .values("user_id")
        )
        teammates = (
            _model("TeamMembership")
            .objects.filter(subscription_id__in=_administered(user))
            .values("user_id")
        )
        return models.Q(pk__in=colleagues) | models.Q(pk__in=teammates) | models.Q(pk=user.pk)

    def key_visibility(self, api_key) -> models.Q:
        """The people holding a role the key sees."""
        roles = _model("Membership").objects.visible_to(api_key).values("user_id")
        return models.Q(pk__in=roles)

    def administration(self, subscriptions) -> models.Q:
        """People holding a role in ``subscriptions`` (a subquery: no duplicate rows)."""
        roles = _model("Membership").objects.filter(subscription_id__in=subscriptions)
        return models.Q(pk__in=roles.values("user_id"))


class TeamQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        own_teams = _model("TeamMembership").objects.filter(user=user).values("team_id")
        return models.Q(subscription_id__in=_administered(user)) | models.Q(pk__in=own_teams)


class TeamMembershipQuerySet(ScopedQuerySet):
    def visibility(self, user) -> models.Q:
        own_teams = _model("TeamMembership").objects.filter(user=user).values("team_id")
        return models.Q(subscription_id__in=_administered(user)) | models.Q(team_id__in=own_teams)

    def team_id_of(self, *, subscription, user) -> int | None:
        """The id of ``user``'s team in ``subscription`` (at most one), or None."""
        return (
            self.filter(subscription=subscription, user=user)
            .values_list("team_id", flat=True)
            .first()
        )


class ApiKeyQuerySet(AdministeredQuerySet):
    def key_visibility(self, api_key) -> models.Q:
        """A key sees itself, not its siblings."""
        return models.Q(pk=api_key.pk)
