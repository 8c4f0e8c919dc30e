"""Reads for the usage reports and the credit usage export.

Each report is one function returning rows, dataclasses whose fields are the report's columns
in order; it states its ``UsageQuery`` (``reports.usage``: scope, timeframe, filters) and the
dimensions it groups by, and the query reads the narrowest rollup that holds them through
``visible_to``. Members get their own usage, project managers their environments' (and their
own elsewhere), subscription admins their subscriptions' and, when asked, their sub-accounts'.
Sessions and p95 latencies come from ``reports.run_stats``. Credits and ratios are exact
``Decimal`` values quantized to the column's places (half up); integers are counts. The export
reads one row per event, streamed from a server-side cursor.
"""

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.db.models import Case, Count, Exists, F, OuterRef, QuerySet, Subquery, Sum, When

from accounts.models import (
    Environment,
    Membership,
    Role,
    Subscription,
    Team,
    TeamMembership,
)
from core.errors import DomainError
from core.money import CREDIT_PLACES
from credits.errors import UnknownEnvironment
from credits.models import Agent

from . import costs
from .costs import row_cost, total_cost, with_currency
from .run_stats import RunStats, run_stats
from .timeframes import Timeframe, current_billing_period
from .usage import (
    HUNDREDTHS,
    RATE,
    ZERO,
    Sums,
    UsageQuery,
    during,
    grouped,
    joined,
    ratio,
    usage_query,
)


class SubscriptionNotFound(DomainError):
    code = "not_found"
    message = "No such subscription among yours."


class NotAllowed(DomainError):
    code = "permission_denied"
    message = "Your role does not allow this."


class InvalidScope(DomainError):
    code = "invalid_scope"
    message = "Choose scope mine, environment (with an environment) or subscription."


class InvalidOrdering(DomainError):
    code = "invalid_ordering"
    message = "Order by one or more columns, comma-separated; a leading '-' sorts descending."


def column(description: str, *, places: Decimal | None = None, total: bool = False) -> dict:
    """Metadata of a report column: ``places`` quantizes a Decimal column; ``total`` marks a
    column whose values add up to a meaningful total."""
    return {"description": description, "places": places, "total": total}


RUNS = column("AI runs (usage events; adjustments are not runs).", total=True)
CREDITS_CONSUMED = column("Credits, adjustments included.", places=CREDIT_PLACES, total=True)
EXCESS_CREDITS = column(
    "Credits beyond the base allocation (soft limit mode).", places=CREDIT_PLACES, total=True
)
BASE_CREDITS = column(
    "Credits drawn from the base allocation (credits less grant and excess credits).",
    places=CREDIT_PLACES,
    total=True,
)
GRANT_CREDITS = column(
    "Credits drawn from grants (top-ups and bonus credits); they cost nothing at use.",
    places=CREDIT_PLACES,
    total=True,
)
COST = column(
    "What the credits cost at the prices in effect when they were used, rounded once to the "
    "currency's minor unit (half to even); a total is the sum of its rows. Empty without a "
    "price.",
    total=True,
)
CURRENCY = column("The ISO 4217 code of cost; empty without a price.", total=True)
INPUT_TOKENS = column("Input tokens across all runs.", total=True)
OUTPUT_TOKENS = column("Output tokens across all runs.", total=True)
ACTIVE_USERS = column("People with usage.")
AVG_LATENCY = column("Mean latency of the runs that reported one.", places=HUNDREDTHS)
P95_LATENCY = column(
    "95th percentile latency: the latency below which 95% of runs fall (percentile_cont(0.95) "
    "within 1%).",
    places=HUNDREDTHS,
)
ERROR_RATE = column("Share of runs that failed, 0 to 1.", places=RATE)
SHARE = column("Share of the report's credits, in percent.", places=HUNDREDTHS)


# --- Rows ----------------------------------------------------------------------------------

# Every row has a label: these name the rows of usage without the dimension a report groups by
# (its id column, where it has one, stays empty).
NO_USER = "No user or API key"  # adjustments by platform staff
NO_AGENT = "No agent"
NO_MODEL = "No model"
NO_PRODUCT = "No product"
NO_FEATURE = "No feature"
NO_TEAM = "No team"
OTHER_TEAMS = "Other teams"  # people in teams the reader may not see
NO_ENVIRONMENT = "No environment"

USER_EMAIL = column(
    "The user's email; for what an API key did alone, the key's name (and its "
    f'account\'s, in brackets, when sub-accounts are included); "{NO_USER}" for usage '
    "nobody is named for (adjustments)."
)

# The columns several reports share: their type and metadata, stated once.
SHARED_COLUMNS = {
    "user_email": (str, USER_EMAIL),
    "user_id": (int | None, column("The user's id; empty for an API key.")),
    "feature": (str, column(f'The feature; "{NO_FEATURE}" when none was given.')),
    "active_users": (int, ACTIVE_USERS),
    "total_runs": (int, RUNS),
    "credits_consumed": (Decimal, CREDITS_CONSUMED),
    "excess_credits": (Decimal, EXCESS_CREDITS),
    "base_credits": (Decimal, BASE_CREDITS),
    "grant_credits": (Decimal, GRANT_CREDITS),
    "cost": (Decimal | None, COST),
    "currency": (str | None, CURRENCY),
    "input_tokens_total": (int, INPUT_TOKENS),
    "output_tokens_total": (int, OUTPUT_TOKENS),
    "avg_latency_ms": (Decimal | None, AVG_LATENCY),
    "p95_latency_ms": (Decimal | None, P95_LATENCY),
    "error_rate": (Decimal | None, ERROR_RATE),
    "share_percent": (Decimal, SHARE),
}
TOKENS = ("input_tokens_total", "output_tokens_total")
LATENCY_AND_ERRORS = ("avg_latency_ms", "p95_latency_ms", "error_rate")
# What the reports by a group of people (team, environment, sub-account) add up.
GROUP_SUMS = ("active_users", "total_runs", "credits_consumed", "excess_credits", *TOKENS)
# What every report ends with: its credits by type and their cost (those it has not named).
MONEY = ("base_credits", "grant_credits", "excess_credits", "cost", "currency")


def row_type(name: str, *columns, money: tuple[str, ...] = MONEY) -> type:
    """A report's row type, a frozen dataclass whose fields are its columns in order: each the
    name of a shared column (``SHARED_COLUMNS``) or ``(name, type, metadata)`` of its own,
    then the ``money`` columns it has not named."""
    columns = (*columns, *(name for name in money if name not in columns))
    specs = [(spec, *SHARED_COLUMNS[spec]) if isinstance(spec, str) else spec for spec in columns]
    row = dataclasses.make_dataclass(
        name,
        [(column_name, kind, field(metadata=metadata)) for column_name, kind, metadata in specs],
        frozen=True,
    )
    row.__module__ = __name__
    return row


UserUsage = row_type(
    "UserUsage",
    "user_email",
    (
        "role",
        str,
        column(
            "The user's highest role: subscription_admin, project_manager or member (empty "
            "for a former member); api_key for a key acting alone."
        ),
    ),
    "user_id",
    "total_runs",
    ("agents_created", int, column("Agents the user created in the timeframe.", total=True)),
    "credits_consumed",
    *TOKENS,
)
AgentUsage = row_type(
    "AgentUsage",
    ("agent_name", str, column(f'The agent\'s name; "{NO_AGENT}" for runs without an agent.')),
    ("agent_id", int | None, column("The agent's id.")),
    ("model_used", str, column("The agent's model.")),
    ("agent_type", str, column("The agent's type, e.g. single_task.")),
    "total_runs",
    (
        "total_sessions",
        int,
        column(
            "Sessions of the runs, each counted once per local day on which it ran with the agent."
        ),
    ),
    (
        "avg_runs_per_session",
        Decimal | None,
        column("Runs that have a session id, per session.", places=HUNDREDTHS),
    ),
    "credits_consumed",
    *TOKENS,
    *LATENCY_AND_ERRORS,
)
ModelUsage = row_type(
    "ModelUsage",
    ("model", str, column(f'The model the runs used; "{NO_MODEL}" when none was given.')),
    "total_runs",
    "credits_consumed",
    *TOKENS,
    *LATENCY_AND_ERRORS,
)
ProductUsage = row_type(
    "ProductUsage",
    ("product", str, column(f'The product\'s name; "{NO_PRODUCT}" for usage without a product.')),
    "credits_consumed",
    (
        "avg_credits_per_day",
        Decimal,
        column("Credits per local day of the timeframe.", places=CREDIT_PLACES),
    ),
    "excess_credits",
    "share_percent",
)
FeatureUsage = row_type(
    "FeatureUsage",
    "feature",
    "total_runs",
    "credits_consumed",
    "excess_credits",
    *TOKENS,
    "share_percent",
)

BASE, GRANT, EXCESS = "base", "grant", "excess"

MemberFeatureCreditUsage = row_type(
    "MemberFeatureCreditUsage",
    "user_email",
    "user_id",
    "feature",
    (
        "credit_type",
        str,
        column(
            f'"{BASE}": credits inside the base allocation; "{EXCESS}": credits beyond it (soft '
            'limit mode), billed at the excess rate; "grant": credits drawn from grants '
            "(top-ups and bonus credits). A grant or excess row only where there were some."
        ),
    ),
    (
        "credits_consumed",
        Decimal,
        column(
            "Credits of this credit type, adjustments included.", places=CREDIT_PLACES, total=True
        ),
    ),
    money=("cost", "currency"),
)
TeamUsage = row_type(
    "TeamUsage",
    (
        "team",
        str,
        column(
            f'The team\'s name; "{NO_TEAM}" for people in no team, API keys and adjustments; '
            f'"{OTHER_TEAMS}" for people in teams the reader may not see.'
        ),
    ),
    ("team_id", int | None, column("The team's id.")),
    *GROUP_SUMS,
    "share_percent",
)
EnvironmentUsage = row_type(
    "EnvironmentUsage",
    (
        "environment",
        str,
        column(f'Project name / Environment name; "{NO_ENVIRONMENT}" for usage outside any.'),
    ),
    ("environment_id", UUID | None, column("The EnvironmentId.")),
    *GROUP_SUMS,
    "share_percent",
)
SubAccountUsage = row_type(
    "SubAccountUsage",
    ("sub_account", str, column("The account's name (the parent subscription is a row too).")),
    ("sub_account_id", int, column("The account's subscription id.")),
    *GROUP_SUMS,
    "share_percent",
)


# --- Which subscription, which usage ---------------------------------------------------------


def report_subscription(*, user, subscription_id: int | None = None) -> Subscription:
    """The subscription a report is about: ``subscription_id`` among those ``user`` belongs
    to, or by default their first top-level one (oldest first). Its ``administered`` says
    whether ``user`` administers it, its ``currency`` what its usage costs are in."""
    subscriptions = Subscription.objects.visible_to(user)
    if subscription_id is None:  # the default is found first: prices are read by its id
        first = subscriptions.order_by(F("parent_id").asc(nulls_first=True), "pk").first()
        subscription_id = first.pk if first else None
    subscription = with_currency(subscriptions, user).filter(pk=subscription_id).first()
    if subscription is None:
        raise SubscriptionNotFound(subscription=subscription_id)
    return subscription


def _report(build: Callable[[UsageQuery], list]) -> Callable[..., list]:
    """A report as callers call it (the reader, the subscription, the timeframe, sub-accounts
    or not, the filters), built from what it reads (``usage_query``)."""

    @functools.wraps(build)
    def report(*, user, subscription, timeframe, include_sub_accounts=False, filters=None):
        return build(
            usage_query(
                user=user,
                subscription=subscription,
                timeframe=timeframe,
                include_sub_accounts=include_sub_accounts,
                filters=filters,
            )
        )

    return report


# --- The reports -----------------------------------------------------------------------------

# Each report column taken from the sums, given the sums and the report's total credits.
_SUMMED_COLUMNS = {
    "total_runs": lambda sums, total: sums.runs,
    "credits_consumed": lambda sums, total: sums.credits,
    "excess_credits": lambda sums, total: sums.excess_credits,
    "base_credits": lambda sums, total: sums.base_credits,
    "grant_credits": lambda sums, total: sums.grant_credits,
    "input_tokens_total": lambda sums, total: sums.input_tokens,
    "output_tokens_total": lambda sums, total: sums.output_tokens,
    "avg_latency_ms": lambda sums, total: sums.avg_latency_ms,
    "error_rate": lambda sums, total: sums.error_rate,
    "share_percent": lambda sums, total: ratio(sums.credits * 100, total, HUNDREDTHS)
    or Decimal("0.00"),
}


def _rows(
    row_class: type, groups: list[tuple[dict, Sums]], labels: Callable, currency: str | None
) -> list:
    """One ``row_class`` row per group: its own columns from ``labels(row, sums)``, the
    summed ones from the sums, the cost in ``currency`` (unless ``labels`` say otherwise),
    most credits first (then by the first column)."""
    total = sum((sums.credits for _, sums in groups), ZERO)
    summed = [
        name for name in (f.name for f in dataclasses.fields(row_class)) if name in _SUMMED_COLUMNS
    ]
    rows = [
        row_class(
            **{
                **{name: _SUMMED_COLUMNS[name](sums, total) for name in summed},
                **_cost(sums.cost, currency),
                **labels(row, sums),
            }
        )
        for row, sums in groups
    ]
    first = dataclasses.fields(row_class)[0].name
    return sorted(rows, key=lambda row: (-row.credits_consumed, getattr(row, first).casefold()))


def _cost(amount: Decimal, currency: str | None) -> dict:
    """The cost and currency columns: ``amount`` rounded once, or both empty (no price)."""
    rounded = row_cost(amount, currency)
    return {"cost": rounded, "currency": currency if rounded is not None else None}


# Reports by a group of people count the people with usage in each group.
ACTIVE_PEOPLE = Count("user_id", distinct=True)


def _group_rows(
    row_class: type, groups: list[tuple[dict, Sums]], labels: Callable, currency: str | None
) -> list:
    """``_rows`` of a report by a group of people (team, environment, account): the group's
    own columns from ``labels(row, sums)``, then its active users (``ACTIVE_PEOPLE``)."""
    return _rows(
        row_class,
        groups,
        lambda row, sums: {**labels(row, sums), "active_users": row["active_users"]},
        currency,
    )


_ROLE_RANK = {Role.SUBSCRIPTION_ADMIN: 0, Role.PROJECT_MANAGER: 1, Role.MEMBER: 2}


PERSON_OR_KEY = ("user_id", "user__email", "key_id", "key_name", "key_account")


def _by_person_or_key(usage: UsageQuery, *dimensions: str) -> QuerySet:
    """The rows of the rollup keyed by person, API key and ``dimensions``, with the key's
    name and account on the rows that no person is named on (``PERSON_OR_KEY``)."""
    return (
        usage.rows(usage.rollup("user", "api_key", *dimensions))
        .annotate(own_key=joined("api_key"))
        .annotate(
            key_id=Case(When(user__isnull=True, then=F("api_key_id"))),
            key_name=Case(When(user__isnull=True, then=F("own_key__name"))),
            # A key belongs to the row's own subscription (the join above says so).
            key_account=Case(
                When(user__isnull=True, api_key__isnull=False, then=F("subscription__name"))
            ),
        )
    )


def _person_or_key_label(row: dict, usage: UsageQuery) -> str:
    """The email, the key's name (see ``_key_label``) or ``NO_USER``."""
    if row["user_id"] is not None:
        return row["user__email"]
    if row["key_id"]:
        return _key_label(row["key_name"], row["key_account"], usage)
    return NO_USER


@_report
def usage_by_user(usage: UsageQuery) -> list[UserUsage]:
    """One row per person, and one per API key for what keys did with nobody named."""
    groups = grouped(_by_person_or_key(usage), *PERSON_OR_KEY)
    user_ids = [row["user_id"] for row, _ in groups if row["user_id"] is not None]
    roles = _roles(usage, user_ids)
    agents_created = dict(
        Agent.objects.visible_to(usage.principal)
        .filter(during(usage.accounts, usage.timeframe, "created_at"), created_by_id__in=user_ids)
        .order_by()
        .values("created_by_id")
        .annotate(count=Count("pk"))
        .values_list("created_by_id", "count")
    )

    def labels(row, sums) -> dict:
        if row["user_id"] is not None:
            role = roles.get(row["user_id"], "")
        else:
            role = "api_key" if row["key_id"] else ""
        return {
            "user_email": _person_or_key_label(row, usage),
            "role": role,
            "user_id": row["user_id"],
            "agents_created": agents_created.get(row["user_id"], 0),
        }

    return _rows(UserUsage, groups, labels, usage.currency)


@_report
def usage_by_member_feature_credit_type(usage: UsageQuery) -> list[MemberFeatureCreditUsage]:
    """Each person's (or key's) credits per feature, split into base, grant and excess
    credits (base = credits - grant - excess), so the rows add up to the credits used.

    Each row's cost is its own: grant credits cost nothing at use, excess credits cost the
    excess price in effect when they were used, base credits the rest of the cost."""
    currency = usage.currency
    group = (*PERSON_OR_KEY, "feature")
    rows = _by_person_or_key(usage, "feature")
    if currency is None:
        merged = {key: (row, sums, ZERO) for key, (row, sums) in _keyed(grouped(rows, *group))}
    else:
        merged = _with_excess_cost(usage, rows, group)
    split = []
    for row, sums, excess_cost in merged.values():
        split.append((row, BASE, sums.base_credits, sums.cost - excess_cost))
        if sums.grant_credits:
            split.append((row, GRANT, sums.grant_credits, ZERO))
        if sums.excess_credits:
            split.append((row, EXCESS, sums.excess_credits, excess_cost))
    result = [
        MemberFeatureCreditUsage(
            user_email=_person_or_key_label(row, usage),
            user_id=row["user_id"],
            feature=row["feature"] or NO_FEATURE,
            credit_type=credit_type,
            credits_consumed=credits,
            **_cost(amount, currency),
        )
        for row, credit_type, credits, amount in split
    ]
    return sorted(
        result,
        key=lambda row: (
            -row.credits_consumed,
            row.user_email.casefold(),
            row.feature.casefold(),
            row.credit_type,
        ),
    )


def _keyed(groups: list[tuple[dict, Sums]]):
    """(person or key, feature) -> its group: the key a ledger row is grouped by too."""
    for row, sums in groups:
        yield (row["user_id"], row["key_id"], row["feature"]), (row, sums)


def _with_excess_cost(usage: UsageQuery, rows: QuerySet, group: tuple) -> dict:
    """The groups with the cost of their excess credits: from the rollup where one excess
    price covers each account's timeframe (in the same query), else from the ledger rows,
    each at the price in effect at its time (one more query, only then)."""
    bounds = [usage.timeframe.bounds_in(account.zone) for account in usage.accounts]
    start, end = min(b.start for b in bounds), max(b.end for b in bounds)
    priced = rows.annotate(
        excess_price=costs.excess_price_at(usage.principal, start),
        price_changes=costs.prices_change_during(usage.principal, start, end),
    )
    merged: dict = {}
    changed = False
    # The price subqueries read the row's subscription and plan: grouped by them too.
    by_price = (*group, "subscription_id", "subscription__plan", "excess_price", "price_changes")
    for key, (row, sums) in _keyed(grouped(priced, *by_price)):
        changed |= row["price_changes"]
        excess_cost = sums.excess_credits * row["excess_price"]
        if key in merged:  # the same person in several accounts
            _, before, cost_before = merged[key]
            sums, excess_cost = before + sums, cost_before + excess_cost
        merged[key] = (row, sums, excess_cost)
    if changed:
        at_its_time = costs.excess_price_at(usage.principal, OuterRef("timestamp"))
        ledger = (
            usage.events()
            .annotate(key_id=Case(When(user__isnull=True, then=F("api_key_id"))))
            .order_by()
            .values("user_id", "key_id", "feature")
            .annotate(excess_cost=Sum(F("excess_credits") * at_its_time))
        )
        for found in ledger:
            key = (found["user_id"], found["key_id"], found["feature"])
            if key in merged:
                row, sums, _ = merged[key]
                merged[key] = (row, sums, found["excess_cost"] or ZERO)
    return merged


def _key_label(name: str, account: str, usage: UsageQuery) -> str:
    """A key's name, and its account's beside it when the report covers several accounts
    (each sub-account has a key called "Demo key" in the demo)."""
    return f"{name} ({account})" if len(usage.accounts) > 1 else name


def _roles(usage: UsageQuery, user_ids: list[int]) -> dict[int, str]:
    """Each user's highest role in the report's accounts, among the memberships the reader
    may see."""
    roles: dict[int, str] = {}
    memberships = Membership.objects.visible_to(usage.principal).filter(
        subscription__in=usage.accounts, user_id__in=user_ids
    )
    for user_id, role in memberships.values_list("user_id", "role"):
        if user_id not in roles or _ROLE_RANK[role] < _ROLE_RANK[roles[user_id]]:
            roles[user_id] = role
    return roles


@_report
def usage_by_agent(usage: UsageQuery) -> list[AgentUsage]:
    """One row per agent; runs without an agent are one row with an empty name."""
    rollup = usage.rollup("agent")
    sessions = {"sessions": Sum("sessions"), "session_runs": Sum("session_runs")}
    groups = grouped(
        usage.rows(rollup).annotate(own_agent=joined("agent")),
        "agent_id",
        "own_agent__name",
        "own_agent__model",
        "own_agent__agent_type",
        **(sessions if rollup.sessions else {}),
    )
    counted = None  # sessions are in the rollup, or counted from the ledger
    if rollup.sessions:
        counted = {
            row["agent_id"]: (int(row["sessions"]), int(row["session_runs"])) for row, _ in groups
        }
    stats = run_stats(usage, rollup, "agent_id", with_sessions=True, sessions=counted)

    def labels(row, sums) -> dict:
        agent_stats = stats.get(row["agent_id"], RunStats())
        return {
            "agent_name": row["own_agent__name"] or NO_AGENT,
            "agent_id": row["agent_id"],
            "model_used": row["own_agent__model"] or "",
            "agent_type": row["own_agent__agent_type"] or "",
            "total_sessions": agent_stats.sessions,
            "avg_runs_per_session": agent_stats.avg_runs_per_session,
            "p95_latency_ms": agent_stats.p95_latency_ms,
        }

    return _rows(AgentUsage, groups, labels, usage.currency)


@_report
def usage_by_model(usage: UsageQuery) -> list[ModelUsage]:
    rollup = usage.rollup("model")
    stats = run_stats(usage, rollup, "model")
    return _rows(
        ModelUsage,
        grouped(usage.rows(rollup), "model"),
        lambda row, sums: {
            "model": row["model"] or NO_MODEL,
            "p95_latency_ms": stats.get(row["model"], RunStats()).p95_latency_ms,
        },
        usage.currency,
    )


@_report
def usage_by_product(usage: UsageQuery) -> list[ProductUsage]:
    return _rows(
        ProductUsage,
        usage.sums("product_id", "product__name"),
        lambda row, sums: {
            "product": row["product__name"] or NO_PRODUCT,
            "avg_credits_per_day": ratio(sums.credits, usage.timeframe.days, CREDIT_PLACES),
        },
        usage.currency,
    )


@_report
def usage_by_feature(usage: UsageQuery) -> list[FeatureUsage]:
    return _rows(
        FeatureUsage,
        usage.sums("feature"),
        lambda row, sums: {"feature": row["feature"] or NO_FEATURE},
        usage.currency,
    )


@_report
def usage_by_team(usage: UsageQuery) -> list[TeamUsage]:
    """One row per team of the people with usage (their team now, not when they used it).

    Teams the reader may not see (``Team.objects.visible_to``; a project manager sees only
    their own) are not named: their members' usage, which the reader does see, is one row,
    ``OTHER_TEAMS``, without an id, so the figures still add up to the report's total."""
    membership = TeamMembership.objects.filter(
        subscription_id=OuterRef("subscription_id"),
        user_id=OuterRef("user_id"),
        team__subscription_id=OuterRef("subscription_id"),
    )
    visible = membership.filter(team__in=Team.objects.visible_to(usage.principal))
    groups = grouped(
        usage.rows(usage.rollup("user")).annotate(
            team_id=Subquery(visible.values("team_id")[:1]),
            team_name=Subquery(visible.values("team__name")[:1]),
            in_a_team=Exists(membership),
        ),
        "team_id",
        "team_name",
        "in_a_team",
        active_users=ACTIVE_PEOPLE,
    )
    return _group_rows(
        TeamUsage,
        groups,
        lambda row, sums: {
            "team": row["team_name"] or (OTHER_TEAMS if row["in_a_team"] else NO_TEAM),
            "team_id": row["team_id"],
        },
        usage.currency,
    )


@_report
def usage_by_environment(usage: UsageQuery) -> list[EnvironmentUsage]:
    groups = grouped(
        usage.rows(usage.rollup("environment", "user")).annotate(
            own_project=joined("environment__project")
        ),
        "environment_id",
        "own_project__name",
        "environment__name",
        "environment__public_id",
        active_users=ACTIVE_PEOPLE,
    )
    return _group_rows(
        EnvironmentUsage,
        groups,
        lambda row, sums: {
            "environment": environment_label(row["own_project__name"], row["environment__name"])
            or NO_ENVIRONMENT,
            "environment_id": row["environment__public_id"],
        },
        usage.currency,
    )


def usage_by_sub_account(*, user, subscription, timeframe, filters=None) -> list[SubAccountUsage]:
    """One row per account: the subscription and each of its sub-accounts, for its admins."""
    if not Subscription.objects.administered_by(user).filter(pk=subscription.pk).exists():
        raise NotAllowed("Usage by sub-account is for the subscription's admins.")
    usage = usage_query(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=True,
        filters=filters,
    )
    found = {
        row["subscription_id"]: (row, sums)
        for row, sums in grouped(
            usage.rows(usage.rollup("user")),
            "subscription_id",
            active_users=ACTIVE_PEOPLE,
        )
    }
    groups = []
    for account in usage.accounts:
        row, sums = found.get(account.pk, ({"active_users": 0}, Sums()))
        groups.append(({**row, "account": account}, sums))
    return _group_rows(
        SubAccountUsage,
        groups,
        # Each account's cost in its own currency (its total only when they share one).
        lambda row, sums: {
            "sub_account": row["account"].name,
            "sub_account_id": row["account"].pk,
            **_cost(sums.cost, row["account"].currency),
        },
        usage.currency,
    )


def environment_label(project: str | None, environment: str | None) -> str:
    """``Project name / Environment name``, or empty for usage outside any environment."""
    return f"{project} / {environment}" if environment else ""


# --- Ordering and totals -----------------------------------------------------------------------


def order_rows(*, rows: list, ordering: str | None, row_class: type) -> list:
    """``rows`` sorted by ``ordering`` ("credits_consumed", "-total_runs,user_email", ...);
    text sorts without regard to case, and empty values sort last either way."""
    columns = [f.name for f in dataclasses.fields(row_class)]
    terms = [term.strip() for term in (ordering or "").split(",") if term.strip()]
    unknown = [term for term in terms if term.removeprefix("-") not in columns]
    if unknown:
        raise InvalidOrdering(ordering=unknown, allowed=columns)
    rows = list(rows)
    for term in reversed(terms):
        name, descending = term.removeprefix("-"), term.startswith("-")
        rows.sort(
            key=lambda row, name=name, descending=descending: _sort_key(
                getattr(row, name), descending
            ),
            reverse=descending,
        )
    return rows


def _sort_key(value, descending: bool) -> tuple:
    # Empty values go last: reversing a descending sort would otherwise bring them first.
    missing = value is None
    if isinstance(value, str):
        value = value.casefold()
    return (not missing if descending else missing, 0 if missing else value)


def report_totals(*, rows: list, row_class: type) -> dict:
    """Sums of the columns marked ``total`` (counts and credits); the cost is the sum of the
    rows' rounded costs, in their one currency (none if they have none or several)."""
    totals = {
        spec.name: sum(
            (getattr(row, spec.name) for row in rows), ZERO if spec.metadata["places"] else 0
        )
        for spec in dataclasses.fields(row_class)
        if spec.metadata["total"] and spec.name not in ("cost", "currency")
    }
    total = total_cost((row.cost, row.currency) for row in rows)
    return {**totals, "cost": total.amount, "currency": total.currency}


# --- The credit usage export -----------------------------------------------------------------

EXPORT_SCOPES = ("mine", "environment", "subscription")
EXPORT_FIELDS = (
    "timestamp",
    "user__email",
    "api_key__name",
    "environment__project__name",
    "environment__name",
    "environment__public_id",
    "credits",
    "grant_credits",
    "excess_credits",
    "cost",
)


@dataclass(frozen=True)
class CreditUsageExport:
    subscription: Subscription
    scope: str
    environment: Environment | None
    timeframe: Timeframe
    events: QuerySet  # named value rows of EXPORT_FIELDS, oldest first
    currency: str | None  # what the rows' costs are in; None: no cost (``reports.costs``)

    def totals(self) -> tuple[Decimal, Decimal | None]:
        """The credits, and the sum of each row's cost rounded once (None: no cost)."""
        if self.currency is None:
            return self.events.aggregate(total=Sum("credits"))["total"] or ZERO, None
        found = self.events.aggregate(
            total=Sum("credits"), cost=Sum(costs.RoundMoney("cost", currency=self.currency))
        )
        zero = row_cost(ZERO, self.currency)
        return found["total"] or ZERO, (found["cost"] or zero) + zero


def credit_usage_export(
    *,
    user,
    scope: str,
    subscription_id: int | None = None,
    environment_id: UUID | None = None,
    now: datetime | None = None,
) -> CreditUsageExport:
    """The ledger rows of the current billing period that ``scope`` covers.

    * ``mine``: the caller's own usage, in one environment or in all of them;
    * ``environment``: everyone's usage in an environment the caller manages (or administers);
    * ``subscription``: all of the subscription's usage, for its admins; its total equals the
      balance's ``used``.

    The environment decides the subscription when both are given. An environment outside the
    caller's subscriptions is not found; a scope the caller's role does not reach is refused.
    """
    if scope not in EXPORT_SCOPES:
        raise InvalidScope(scope=scope, allowed=list(EXPORT_SCOPES))
    if scope == "environment" and environment_id is None:
        raise InvalidScope("Give the environment to export (its EnvironmentId).", scope=scope)
    if scope == "subscription" and environment_id is not None:
        raise InvalidScope("The subscription scope covers every environment: omit environment.")
    environment = None
    if environment_id is not None:
        environment = _export_environment(
            user=user, public_id=environment_id, subscription_id=subscription_id
        )
        subscription = environment.project.subscription
    else:
        subscription = report_subscription(user=user, subscription_id=subscription_id)
    timeframe = current_billing_period(subscription=subscription, now=now)
    narrowed = {} if environment is None else {"environment": environment}
    if scope == "mine":
        narrowed["user"] = user
    elif scope == "environment":
        if not Environment.objects.managed_by(user).filter(pk=environment.pk).exists():
            raise NotAllowed("Exporting an environment needs its project manager role.")
    elif not Subscription.objects.administered_by(user).filter(pk=subscription.pk).exists():
        raise NotAllowed("Exporting the whole subscription is for its admins.")
    query = UsageQuery(
        principal=user, accounts=[subscription], timeframe=timeframe, narrowed=narrowed
    )
    return CreditUsageExport(
        subscription=subscription,
        scope=scope,
        environment=environment,
        timeframe=timeframe,
        events=query.events().order_by("timestamp", "pk").values_list(*EXPORT_FIELDS, named=True),
        currency=query.currency,
    )


def _export_environment(*, user, public_id: UUID, subscription_id: int | None) -> Environment:
    environments = Environment.objects.select_related("project__subscription").filter(
        public_id=public_id, project__subscription__in=Subscription.objects.visible_to(user)
    )
    if subscription_id is not None:
        environments = environments.filter(project__subscription_id=subscription_id)
    environment = environments.first()
    if environment is None:
        raise UnknownEnvironment(
            "No environment with this EnvironmentId in your subscriptions.",
            environment=str(public_id),
        )
    return environment
