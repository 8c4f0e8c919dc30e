"""The usage reports Creditdesk offers, stated once.

The report API (URLs, parameters, OpenAPI document), the schedules (what they may attach), the
admin's choices and the scheduled emails (their CSV files) all read this list. A report's
columns are the fields of its row dataclass in ``reports.selectors``, in order, with their
``column(...)`` metadata. Nothing here speaks HTTP: the API turns the catalogue into views and
serializers of its own.
"""

import dataclasses
import functools
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from accounts.models import Role, Subscription
from core.errors import DomainError

from . import selectors
from .filters import UsageFilterSet

EVERYONE = (Role.SUBSCRIPTION_ADMIN, Role.PROJECT_MANAGER, Role.MEMBER)
ADMINS = (Role.SUBSCRIPTION_ADMIN,)

_PAID_PLANS = [
    label for value, label in Subscription.Plan.choices if value != Subscription.Plan.FREE
]
# "Pro, Premium or Scale": the plans with per-member usage (``Subscription.has_team_views``).
PLANS_WITH_TEAM_VIEWS = ", ".join(_PAID_PLANS[:-1]) + f" or {_PAID_PLANS[-1]}"


class PlanRequired(DomainError):
    code = "plan_required"
    message = f"This report is available on the {PLANS_WITH_TEAM_VIEWS} plans."


@dataclass(frozen=True)
class Column:
    name: str
    description: str
    kind: type  # str, int, Decimal or UUID
    nullable: bool
    places: Decimal | None  # Decimal columns: the places every value is written with
    total: bool  # its values add up to a meaningful total

    @property
    def is_text(self) -> bool:
        """Whatever people typed (names, emails, models): CSV neutralises formulas in it."""
        return self.kind is str

    def cell(self, value) -> str | int | None:
        """The value as the CSV file and the JSON rows write it: exact decimal strings with
        the column's places, whole numbers, UUIDs with dashes; None is an empty cell."""
        if value is None:
            return None
        if self.kind is Decimal:
            # Money has no fixed places: it is already rounded to its currency's minor unit.
            return f"{value.quantize(self.places) if self.places else value:f}"
        if self.kind is int:
            return int(value)
        return str(value)


@dataclass(frozen=True)
class Filter:
    name: str
    description: str
    value: str  # "integer", "email" or "text"


def _column(spec: dataclasses.Field) -> Column:
    kinds = typing.get_args(spec.type) or (spec.type,)
    kind = next(kind for kind in kinds if kind is not type(None))
    assert kind in (str, int, Decimal, UUID), f"{spec.name}: no cell format for {kind}"
    return Column(
        name=spec.name,
        description=spec.metadata["description"],
        kind=kind,
        nullable=type(None) in kinds,
        places=spec.metadata["places"],
        total=spec.metadata["total"],
    )


_FILTER_VALUES = {"team": "integer", "created_by": "email"}
# Every report reads the same usage and takes the same filters.
FILTERS = tuple(
    Filter(name, spec.extra.get("help_text", ""), _FILTER_VALUES.get(name, "text"))
    for name, spec in UsageFilterSet.base_filters.items()
)


@dataclass(frozen=True)
class Report:
    slug: str
    title: str
    description: str
    builder: Callable[..., list]
    row_type: type
    readers: Sequence[str] = EVERYONE
    sub_account_toggle: bool = True  # else sub-accounts are always included
    per_member: bool = False  # names people: needs ``Subscription.has_team_views``
    filters: Sequence[Filter] = FILTERS
    previewed: Sequence[str] = ()  # the Reports page's preview columns, if not the default

    # Cached: ``cells`` reads them for every row.
    @functools.cached_property
    def columns(self) -> tuple[Column, ...]:
        return tuple(_column(spec) for spec in dataclasses.fields(self.row_type))

    @functools.cached_property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def preview_columns(self) -> Sequence[str]:
        """What the Reports page previews: the first column and the credits by default."""
        return self.previewed or (self.columns[0].name, "credits_consumed")

    @functools.cached_property
    def text_columns(self) -> frozenset[str]:
        return frozenset(column.name for column in self.columns if column.is_text)

    def cells(self, row) -> list:
        return [column.cell(getattr(row, column.name)) for column in self.columns]

    def total_cells(self, totals: dict) -> dict:
        return {
            column.name: column.cell(totals[column.name]) for column in self.columns if column.total
        }

    def refusal(self, subscription: Subscription) -> DomainError | None:
        """Why the reader may not read this report on ``subscription`` (as
        ``selectors.report_subscription`` returns it: ``administered`` is the reader's)."""
        if self.per_member and not subscription.has_team_views:
            return PlanRequired(
                f"{self.title} shows each member's usage: available on the "
                f"{PLANS_WITH_TEAM_VIEWS} plans (this subscription is on the "
                f"{subscription.get_plan_display()} plan).",
                report=self.slug,
                plan=subscription.plan,
            )
        if tuple(self.readers) == ADMINS and not subscription.administered:
            return selectors.NotAllowed(f"{self.title} is for the subscription's admins.")
        return None

    def rows(
        self,
        *,
        user,
        subscription: Subscription,
        timeframe,
        filters=None,
        include_sub_accounts: bool = False,
        ordering: str | None = None,
    ) -> list:
        """The report's rows as ``user`` may see them, in ``ordering`` (default: credits
        descending); raises the refusal if ``user`` may not read it."""
        refusal = self.refusal(subscription)
        if refusal is not None:
            raise refusal
        options = {"include_sub_accounts": include_sub_accounts} if self.sub_account_toggle else {}
        rows = self.builder(
            user=user, subscription=subscription, timeframe=timeframe, filters=filters, **options
        )
        return selectors.order_rows(rows=rows, ordering=ordering, row_class=self.row_type)


REPORTS = (
    Report(
        "usage-by-user",
        "Usage by user",
        "Credits, runs and tokens per person, and per API key for what keys did alone.",
        selectors.usage_by_user,
        selectors.UserUsage,
        per_member=True,
    ),
    Report(
        "usage-by-agent",
        "Usage by agent",
        "Runs, sessions, credits, tokens, latency (mean and p95) and error rate per agent.",
        selectors.usage_by_agent,
        selectors.AgentUsage,
    ),
    Report(
        "usage-by-model",
        "Usage by model",
        "Runs, credits, tokens, latency (mean and p95) and error rate per model.",
        selectors.usage_by_model,
        selectors.ModelUsage,
    ),
    Report(
        "usage-by-product",
        "Usage by product",
        "Credits, average credits per day, excess credits and share per product.",
        selectors.usage_by_product,
        selectors.ProductUsage,
    ),
    Report(
        "usage-by-feature",
        "Usage by feature",
        "Runs, credits, excess credits, tokens and share per feature.",
        selectors.usage_by_feature,
        selectors.FeatureUsage,
    ),
    Report(
        "usage-by-member-feature-credit-type",
        "Usage by member, feature and credit type",
        "Each person's credits per feature, split into base credits (inside the allocation) "
        "and excess credits (beyond it).",
        selectors.usage_by_member_feature_credit_type,
        selectors.MemberFeatureCreditUsage,
        per_member=True,
        previewed=("user_email", "feature", "credit_type", "credits_consumed"),
    ),
    Report(
        "usage-by-team",
        "Usage by team",
        "Usage per team of the people who used credits (their current team).",
        selectors.usage_by_team,
        selectors.TeamUsage,
        per_member=True,
    ),
    Report(
        "usage-by-environment",
        "Usage by environment",
        "Usage per environment, named `Project / Environment`, with its EnvironmentId.",
        selectors.usage_by_environment,
        selectors.EnvironmentUsage,
    ),
    Report(
        "usage-by-sub-account",
        "Usage by sub-account",
        "Usage per account: the subscription and each of its sub-accounts. For the "
        "subscription's admins (others get a 403); sub-accounts are always included.",
        selectors.usage_by_sub_account,
        selectors.SubAccountUsage,
        readers=ADMINS,
        sub_account_toggle=False,
    ),
)
BY_SLUG = {report.slug: report for report in REPORTS}

# What a schedule can attach to its emails: the reports, and the credit usage export
# (``/api/v1/exports/credit-usage/``, every event of a whole billing period).
CREDIT_USAGE_EXPORT = "credit-usage"
ATTACHMENTS = (
    *((report.slug, report.title) for report in REPORTS),
    (CREDIT_USAGE_EXPORT, "Credit usage export (every event; monthly reports only)"),
)
ATTACHMENT_NAMES = tuple(name for name, _ in ATTACHMENTS)
