"""Filters of the usage reports.

One FilterSet serves every rollup and the ledger rows alike: a filter validated once narrows
any of them that has its field (``filter_queryset(queryset)``), and ``dimensions()`` tells the
reports which dimensions the filters read, so that they pick a rollup keyed by them. A value
that does not exist among what the caller can see is invalid, not an empty report: a typo must
not read as "no usage". What each filter is (its label, dimension and choices) is stated once,
in ``FILTERS``.
"""

from collections.abc import Callable
from dataclasses import dataclass

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from accounts.models import Subscription, Team, User
from credits.models import Agent, DailyUsage, Product
from credits.rollups import MONTH, narrowest_rollup


class KnownValueField(forms.ModelChoiceField):
    """A text value that must occur in ``queryset`` under ``to_field_name``; it cleans to the
    text itself (many rows may hold it)."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if not self.queryset.filter(**{self.to_field_name: value}).exists():
            raise forms.ValidationError(f"Unknown value {value!r}.", code="invalid_choice")
        return value


class EmailChoiceField(forms.ModelChoiceField):
    """A user given by email, whatever its case (as people log in)."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        user = self.queryset.filter(email__iexact=value).first()
        if user is None:
            raise forms.ValidationError(f"Unknown user {value!r}.", code="invalid_choice")
        return user


class KnownValueFilter(django_filters.ModelChoiceFilter):
    field_class = KnownValueField


class EmailChoiceFilter(django_filters.ModelChoiceFilter):
    field_class = EmailChoiceField


def _used(dimension: str):
    """The usage ``user`` sees in ``accounts``, from the smallest rollup keyed by
    ``dimension``: its monthly rows when it has them, which cover every event."""

    def rows(user, accounts, whole_subscriptions) -> QuerySet:
        rollup = narrowest_rollup({dimension}, whole_subscriptions=whole_subscriptions)
        rows = rollup.model.objects.visible_to(user).filter(subscription__in=accounts)
        return rows.filter(grain=MONTH) if rollup.monthly else rows

    return rows


def _in_accounts(model):
    """The rows of ``model`` that ``user`` sees in ``accounts``."""
    return lambda user, accounts, _: model.objects.visible_to(user).filter(
        subscription__in=accounts
    )


def _people(user, accounts, whole_subscriptions) -> QuerySet:
    return User.objects.visible_to(user)


def _products(user, accounts, whole_subscriptions) -> QuerySet:
    """The products enabled for ``accounts``, and any they used."""
    used = _used("product")(user, accounts, whole_subscriptions).values("product_id")
    return Product.objects.filter(Q(enabled_for__in=accounts) | Q(pk__in=used))


@dataclass(frozen=True)
class UsageFilter:
    label: str  # as the Reports page's download dialog names it
    # The dimension of the usage it reads (the team's members are users; an agent's type and
    # creator belong to the agent).
    dimension: str
    choices: Callable  # what its value must be among, for ``user`` reading ``accounts``
    value: str  # the field of a choice that the API takes
    shown: str  # the field of a choice that people read


# Every usage filter, by its parameter name.
FILTERS = {
    "team": UsageFilter("Team", "user", _in_accounts(Team), "pk", "name"),
    "agent_type": UsageFilter(
        "Agent type", "agent", _in_accounts(Agent), "agent_type", "agent_type"
    ),
    "model": UsageFilter("Model", "model", _used("model"), "model", "model"),
    "created_by": UsageFilter("Created by", "agent", _people, "email", "email"),
    "product": UsageFilter("Product", "product", _products, "slug", "name"),
    "feature": UsageFilter("Feature", "feature", _used("feature"), "feature", "feature"),
}


def _known_value(field_name: str, to_field_name: str, model, help_text: str):
    """A filter whose value must be one of the ``to_field_name`` values the caller can see
    (``UsageFilterSet`` sets the queryset per request)."""
    return KnownValueFilter(
        field_name=field_name,
        to_field_name=to_field_name,
        queryset=model.objects.none(),
        help_text=help_text,
    )


class UsageFilterSet(django_filters.FilterSet):
    team = django_filters.ModelChoiceFilter(
        field_name="user__team_memberships__team",
        queryset=Team.objects.none(),
        help_text="Team id: usage of the team's members.",
    )
    agent_type = _known_value(
        "agent__agent_type", "agent_type", Agent, "Agent type, e.g. single_task."
    )
    model = _known_value("model", "model", DailyUsage, "The model the runs used.")
    created_by = EmailChoiceFilter(
        field_name="agent__created_by",
        queryset=User.objects.none(),
        help_text="Email of the person who created the agents.",
    )
    product = _known_value("product__slug", "slug", Product, "Product slug.")
    feature = _known_value("feature", "feature", DailyUsage, "Feature name.")

    def __init__(
        self, data, *, user, accounts: list[Subscription], whole_subscriptions: bool = False
    ):
        """``whole_subscriptions``: ``user`` administers every one of ``accounts``."""
        super().__init__(data, DailyUsage.objects.none())
        # Only the filters asked for: each one checks its value with a scoped query.
        self.filters = {name: spec for name, spec in self.filters.items() if self.data.get(name)}
        for name, spec in self.filters.items():
            spec.queryset = FILTERS[name].choices(user, accounts, whole_subscriptions)

    def dimensions(self) -> set[str]:
        """The dimensions of the usage that the filters asked for read."""
        return {FILTERS[name].dimension for name in self.filters}
