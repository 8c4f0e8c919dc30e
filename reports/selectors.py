"""Reads for the usage reports and the credit usage export.

Every read starts from the scoping layer (``visible_to``): members get their own usage,
project managers their environments' (and their own elsewhere), subscription admins their
subscriptions' and, when asked, their sub-accounts'. Figures come from the daily rollups
(``DailyUsage``). Only what a rollup cannot hold is read from the ledger: the 95th percentile
of latency and distinct sessions, which PostgreSQL computes over the timeframe's ledger rows
(found through the (subscription, timestamp) index), and the export's one row per event,
streamed from a server-side cursor.

Each report is one function returning rows, dataclasses whose fields are the report's columns
in order. Credits and ratios are exact ``Decimal`` values quantized to the column's places
(half up); integers are counts. The 95th percentile is ``percentile_cont(0.95)``, computed by
PostgreSQL in double precision and given to 0.01 ms; other databases (the SQLite demo) leave it
empty.
"""

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from uuid import UUID

from django.db import connections
from django.db.models import (
    Aggregate,
    Case,
    Count,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    When,
)

from accounts.errors import DomainError
from accounts.models import Environment, Membership, Role, Subscription, TeamMembership
from credits.errors import UnknownEnvironment
from credits.models import Agent, CreditEvent, DailyUsage

from .filters import UsageFilterSet
from .timeframes import Timeframe, current_billing_period

CREDITS = Decimal("0.0001")
HUNDREDTHS = Decimal("0.01")
RATE = Decimal("0.0001")
ZERO = Decimal("0.0000")
P95 = 0.95


class SubscriptionNotFound(DomainError):
    code = "not_found"
    message = "No such subscription among yours."


class NotAllowed(DomainError):
    code = "permission_denied"
    message = "Your role does not allow this."


class InvalidFilter(DomainError):
    code = "invalid_filter"
    message = "Some filters are invalid."


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
CREDITS_CONSUMED = column("Credits, adjustments included.", places=CREDITS, total=True)
EXCESS_CREDITS = column(
    "Credits beyond the base allocation (soft limit mode).", places=CREDITS, total=True
)
INPUT_TOKENS = column("Input tokens across all runs.", total=True)
OUTPUT_TOKENS = column("Output tokens across all runs.", total=True)
ACTIVE_USERS = column("People with usage.")
AVG_LATENCY = column("Mean latency of the runs that reported one.", places=HUNDREDTHS)
P95_LATENCY = column(
    "95th percentile latency, percentile_cont(0.95): the latency below which 95% of runs fall.",
    places=HUNDREDTHS,
)
ERROR_RATE = column("Share of runs that failed, 0 to 1.", places=RATE)
SHARE = column("Share of the report's credits, in percent.", places=HUNDREDTHS)


# --- Rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserUsage:
    user_email: str = field(
        metadata=column(
            "The user's email; for what an API key did alone, the key's name; empty for usage "
            "nobody is named for (adjustments)."
        )
    )
    role: str = field(
        metadata=column(
            "The user's highest role: subscription_admin, project_manager or member (empty "
            "for a former member); api_key for a key acting alone."
        )
    )
    user_id: int | None = field(metadata=column("The user's id; empty for an API key."))
    total_runs: int = field(metadata=RUNS)
    agents_created: int = field(
        metadata=column("Agents the user created in the timeframe.", total=True)
    )
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    input_tokens_total: int = field(metadata=INPUT_TOKENS)
    output_tokens_total: int = field(metadata=OUTPUT_TOKENS)


@dataclass(frozen=True)
class AgentUsage:
    agent_name: str = field(metadata=column("The agent's name; empty for runs without an agent."))
    agent_id: int | None = field(metadata=column("The agent's id."))
    model_used: str = field(metadata=column("The agent's model."))
    agent_type: str = field(metadata=column("The agent's type, e.g. single_task."))
    total_runs: int = field(metadata=RUNS)
    total_sessions: int = field(metadata=column("Distinct session ids of the runs."))
    avg_runs_per_session: Decimal | None = field(
        metadata=column("Runs that have a session id, per session.", places=HUNDREDTHS)
    )
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    input_tokens_total: int = field(metadata=INPUT_TOKENS)
    output_tokens_total: int = field(metadata=OUTPUT_TOKENS)
    avg_latency_ms: Decimal | None = field(metadata=AVG_LATENCY)
    p95_latency_ms: Decimal | None = field(metadata=P95_LATENCY)
    error_rate: Decimal | None = field(metadata=ERROR_RATE)


@dataclass(frozen=True)
class ModelUsage:
    model: str = field(metadata=column("The model the runs used; empty when none was given."))
    total_runs: int = field(metadata=RUNS)
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    input_tokens_total: int = field(metadata=INPUT_TOKENS)
    output_tokens_total: int = field(metadata=OUTPUT_TOKENS)
    avg_latency_ms: Decimal | None = field(metadata=AVG_LATENCY)
    p95_latency_ms: Decimal | None = field(metadata=P95_LATENCY)
    error_rate: Decimal | None = field(metadata=ERROR_RATE)


@dataclass(frozen=True)
class ProductUsage:
    product: str = field(metadata=column("The product's name; empty for usage without a product."))
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    avg_credits_per_day: Decimal = field(
        metadata=column("Credits per local day of the timeframe.", places=CREDITS)
    )
    excess_credits: Decimal = field(metadata=EXCESS_CREDITS)
    share_percent: Decimal = field(metadata=SHARE)


@dataclass(frozen=True)
class FeatureUsage:
    feature: str = field(metadata=column("The feature; empty when none was given."))
    total_runs: int = field(metadata=RUNS)
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    excess_credits: Decimal = field(metadata=EXCESS_CREDITS)
    input_tokens_total: int = field(metadata=INPUT_TOKENS)
    output_tokens_total: int = field(metadata=OUTPUT_TOKENS)
    share_percent: Decimal = field(metadata=SHARE)


@dataclass(frozen=True)
class TeamUsage:
    team: str = field(
        metadata=column("The team's name; empty for people in no team, keys and adjustments.")
    )
    team_id: int | None = field(metadata=column("The team's id."))
    active_users: int = field(metadata=ACTIVE_USERS)
    total_runs: int = field(metadata=RUNS)
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    excess_credits: Decimal = field(metadata=EXCESS_CREDITS)
    input_tokens_total: int = field(metadata=INPUT_TOKENS)
    output_tokens_total: int = field(metadata=OUTPUT_TOKENS)
    share_percent: Decimal = field(metadata=SHARE)


@dataclass(frozen=True)
class EnvironmentUsage:
    environment: str = field(metadata=column("Project name / Environment name."))
    environment_id: UUID | None = field(metadata=column("The EnvironmentId."))
    active_users: int = field(metadata=ACTIVE_USERS)
    total_runs: int = field(metadata=RUNS)
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    excess_credits: Decimal = field(metadata=EXCESS_CREDITS)
    input_tokens_total: int = field(metadata=INPUT_TOKENS)
    output_tokens_total: int = field(metadata=OUTPUT_TOKENS)
    share_percent: Decimal = field(metadata=SHARE)


@dataclass(frozen=True)
class SubAccountUsage:
    sub_account: str = field(
        metadata=column("The account's name (the parent subscription is a row too).")
    )
    sub_account_id: int = field(metadata=column("The account's subscription id."))
    active_users: int = field(metadata=ACTIVE_USERS)
    total_runs: int = field(metadata=RUNS)
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    excess_credits: Decimal = field(metadata=EXCESS_CREDITS)
    input_tokens_total: int = field(metadata=INPUT_TOKENS)
    output_tokens_total: int = field(metadata=OUTPUT_TOKENS)
    share_percent: Decimal = field(metadata=SHARE)


# --- Which subscription, which usage ---------------------------------------------------------


def report_subscription(*, user, subscription_id: int | None = None) -> Subscription:
    """The subscription a report is about: ``subscription_id`` among those ``user`` belongs
    to, or by default their first top-level one (oldest first)."""
    subscriptions = Subscription.objects.visible_to(user)
    if subscription_id is not None:
        subscriptions = subscriptions.filter(pk=subscription_id)
    subscription = subscriptions.order_by(F("parent_id").asc(nulls_first=True), "pk").first()
    if subscription is None:
        raise SubscriptionNotFound(subscription=subscription_id)
    return subscription


@dataclass(frozen=True)
class _Usage:
    accounts: list[Subscription]
    rollups: QuerySet  # DailyUsage of the timeframe, scoped and filtered
    events: QuerySet  # CreditEvent of the timeframe, scoped and filtered


def _usage(*, user, subscription, timeframe, include_sub_accounts, filters) -> _Usage:
    accounts = [subscription]
    if include_sub_accounts:
        accounts += Subscription.objects.visible_to(user).filter(parent=subscription)
    rollups = DailyUsage.objects.visible_to(user).filter(
        subscription__in=accounts, day__gte=timeframe.first_day, day__lte=timeframe.last_day
    )
    events = CreditEvent.objects.visible_to(user).filter(_during(accounts, timeframe, "timestamp"))
    filterset = UsageFilterSet(filters or {}, rollups, user=user, accounts=accounts)
    if not filterset.is_valid():
        raise InvalidFilter(**{name: list(errors) for name, errors in filterset.errors.items()})
    return _Usage(
        accounts=accounts,
        rollups=filterset.filter_queryset(rollups),
        events=filterset.filter_queryset(events),
    )


def _during(accounts: list[Subscription], timeframe: Timeframe, instant_field: str) -> Q:
    """The timeframe's local days in each account's own time zone."""
    condition = Q()
    for account in accounts:
        bounds = timeframe.bounds_in(account.zone)
        condition |= Q(
            subscription=account,
            **{f"{instant_field}__gte": bounds.start, f"{instant_field}__lt": bounds.end},
        )
    return condition


# --- Summing rollups and reading the ledger --------------------------------------------------


@dataclass(frozen=True)
class _Sums:
    """The rollup columns that add up, summed over a group of rollup rows."""

    credits: Decimal = ZERO
    excess_credits: Decimal = ZERO
    runs: int = 0
    failed_runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms_total: int = 0
    latency_samples: int = 0

    @classmethod
    def of(cls, row: dict) -> "_Sums":
        # PostgreSQL sums bigints as numeric: back to the column's type.
        return cls(
            **{
                spec.name: spec.type(row[f"sum_{spec.name}"] or 0)
                for spec in dataclasses.fields(cls)
            }
        )

    @property
    def avg_latency_ms(self) -> Decimal | None:
        return _ratio(self.latency_ms_total, self.latency_samples, HUNDREDTHS)

    @property
    def error_rate(self) -> Decimal | None:
        return _ratio(self.failed_runs, self.runs, RATE)


def _grouped(rollups: QuerySet, *group: str, **annotations) -> list[tuple[dict, _Sums]]:
    """One SQL query: the rollups summed per ``group``."""
    sums = {f"sum_{spec.name}": Sum(spec.name) for spec in dataclasses.fields(_Sums)}
    rows = rollups.order_by().values(*group).annotate(**sums, **annotations)
    return [(row, _Sums.of(row)) for row in rows]


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, *, fraction: float):
        super().__init__(expression, fraction=float(fraction))


@dataclass(frozen=True)
class _LedgerStats:
    sessions: int = 0
    runs_in_sessions: int = 0
    p95_latency_ms: Decimal | None = None

    @property
    def avg_runs_per_session(self) -> Decimal | None:
        return _ratio(self.runs_in_sessions, self.sessions, HUNDREDTHS)


def _ledger_stats(events: QuerySet, group: str) -> dict:
    """Distinct sessions and the p95 latency of the runs, per ``group``, in one SQL query."""
    in_session = ~Q(session_id="")
    aggregates = {
        "sessions": Count("session_id", distinct=True, filter=in_session),
        "runs_in_sessions": Count("pk", filter=in_session),
    }
    if connections[events.db].vendor == "postgresql":
        aggregates["p95"] = PercentileCont("latency_ms", fraction=P95)
    rows = events.filter(kind=CreditEvent.Kind.USAGE).order_by().values(group)
    return {
        row[group]: _LedgerStats(
            sessions=row["sessions"],
            runs_in_sessions=row["runs_in_sessions"],
            p95_latency_ms=_from_float(row.get("p95"), HUNDREDTHS),
        )
        for row in rows.annotate(**aggregates)
    }


def _ratio(numerator, denominator, places: Decimal) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(places, ROUND_HALF_UP)


def _from_float(value: float | None, places: Decimal) -> Decimal | None:
    return None if value is None else Decimal(repr(value)).quantize(places, ROUND_HALF_UP)


def _share(credits: Decimal, total: Decimal) -> Decimal:
    return _ratio(credits * 100, total, HUNDREDTHS) or Decimal("0.00")


def _total_credits(groups: list[tuple[dict, _Sums]]) -> Decimal:
    return sum((sums.credits for _, sums in groups), ZERO)


def _by_credits(rows: list) -> list:
    """The default order: most credits first, then by the first column."""
    first = dataclasses.fields(rows[0])[0].name if rows else None
    return sorted(rows, key=lambda row: (-row.credits_consumed, getattr(row, first).casefold()))


# --- The reports -----------------------------------------------------------------------------

_ROLE_RANK = {Role.SUBSCRIPTION_ADMIN: 0, Role.PROJECT_MANAGER: 1, Role.MEMBER: 2}


def usage_by_user(
    *, user, subscription, timeframe, include_sub_accounts=False, filters=None
) -> list[UserUsage]:
    """One row per person, and one per API key for what keys did with nobody named."""
    usage = _usage(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=include_sub_accounts,
        filters=filters,
    )
    groups = _grouped(
        usage.rollups.annotate(
            key_id=Case(When(user__isnull=True, then=F("api_key_id"))),
            key_name=Case(When(user__isnull=True, then=F("api_key__name"))),
        ),
        "user_id",
        "user__email",
        "key_id",
        "key_name",
    )
    user_ids = [row["user_id"] for row, _ in groups if row["user_id"] is not None]
    roles = _roles(user_ids, usage.accounts)
    agents_created = dict(
        Agent.objects.visible_to(user)
        .filter(_during(usage.accounts, timeframe, "created_at"), created_by_id__in=user_ids)
        .order_by()
        .values("created_by_id")
        .annotate(count=Count("pk"))
        .values_list("created_by_id", "count")
    )
    rows = []
    for row, sums in groups:
        if row["user_id"] is not None:
            email, role = row["user__email"], roles.get(row["user_id"], "")
        else:
            email, role = row["key_name"] or "", "api_key" if row["key_id"] else ""
        rows.append(
            UserUsage(
                user_email=email,
                role=role,
                user_id=row["user_id"],
                total_runs=sums.runs,
                agents_created=agents_created.get(row["user_id"], 0),
                credits_consumed=sums.credits,
                input_tokens_total=sums.input_tokens,
                output_tokens_total=sums.output_tokens,
            )
        )
    return _by_credits(rows)


def _roles(user_ids: list[int], accounts: list[Subscription]) -> dict[int, str]:
    """Each user's highest role in ``accounts``."""
    roles: dict[int, str] = {}
    memberships = Membership.objects.filter(subscription__in=accounts, user_id__in=user_ids)
    for user_id, role in memberships.values_list("user_id", "role"):
        if user_id not in roles or _ROLE_RANK[role] < _ROLE_RANK[roles[user_id]]:
            roles[user_id] = role
    return roles


def usage_by_agent(
    *, user, subscription, timeframe, include_sub_accounts=False, filters=None
) -> list[AgentUsage]:
    """One row per agent; runs without an agent are one row with an empty name."""
    usage = _usage(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=include_sub_accounts,
        filters=filters,
    )
    groups = _grouped(usage.rollups, "agent_id", "agent__name", "agent__model", "agent__agent_type")
    stats = _ledger_stats(usage.events, "agent_id")
    rows = []
    for row, sums in groups:
        ledger = stats.get(row["agent_id"], _LedgerStats())
        rows.append(
            AgentUsage(
                agent_name=row["agent__name"] or "",
                agent_id=row["agent_id"],
                model_used=row["agent__model"] or "",
                agent_type=row["agent__agent_type"] or "",
                total_runs=sums.runs,
                total_sessions=ledger.sessions,
                avg_runs_per_session=ledger.avg_runs_per_session,
                credits_consumed=sums.credits,
                input_tokens_total=sums.input_tokens,
                output_tokens_total=sums.output_tokens,
                avg_latency_ms=sums.avg_latency_ms,
                p95_latency_ms=ledger.p95_latency_ms,
                error_rate=sums.error_rate,
            )
        )
    return _by_credits(rows)


def usage_by_model(
    *, user, subscription, timeframe, include_sub_accounts=False, filters=None
) -> list[ModelUsage]:
    usage = _usage(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=include_sub_accounts,
        filters=filters,
    )
    stats = _ledger_stats(usage.events, "model")
    rows = [
        ModelUsage(
            model=row["model"],
            total_runs=sums.runs,
            credits_consumed=sums.credits,
            input_tokens_total=sums.input_tokens,
            output_tokens_total=sums.output_tokens,
            avg_latency_ms=sums.avg_latency_ms,
            p95_latency_ms=stats.get(row["model"], _LedgerStats()).p95_latency_ms,
            error_rate=sums.error_rate,
        )
        for row, sums in _grouped(usage.rollups, "model")
    ]
    return _by_credits(rows)


def usage_by_product(
    *, user, subscription, timeframe, include_sub_accounts=False, filters=None
) -> list[ProductUsage]:
    usage = _usage(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=include_sub_accounts,
        filters=filters,
    )
    groups = _grouped(usage.rollups, "product_id", "product__name")
    total = _total_credits(groups)
    rows = [
        ProductUsage(
            product=row["product__name"] or "",
            credits_consumed=sums.credits,
            avg_credits_per_day=_ratio(sums.credits, timeframe.days, CREDITS),
            excess_credits=sums.excess_credits,
            share_percent=_share(sums.credits, total),
        )
        for row, sums in groups
    ]
    return _by_credits(rows)


def usage_by_feature(
    *, user, subscription, timeframe, include_sub_accounts=False, filters=None
) -> list[FeatureUsage]:
    usage = _usage(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=include_sub_accounts,
        filters=filters,
    )
    groups = _grouped(usage.rollups, "feature")
    total = _total_credits(groups)
    rows = [
        FeatureUsage(
            feature=row["feature"],
            total_runs=sums.runs,
            credits_consumed=sums.credits,
            excess_credits=sums.excess_credits,
            input_tokens_total=sums.input_tokens,
            output_tokens_total=sums.output_tokens,
            share_percent=_share(sums.credits, total),
        )
        for row, sums in groups
    ]
    return _by_credits(rows)


def usage_by_team(
    *, user, subscription, timeframe, include_sub_accounts=False, filters=None
) -> list[TeamUsage]:
    """One row per team of the people with usage (their team now, not when they used it)."""
    usage = _usage(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=include_sub_accounts,
        filters=filters,
    )
    team = TeamMembership.objects.filter(
        subscription_id=OuterRef("subscription_id"), user_id=OuterRef("user_id")
    )
    groups = _grouped(
        usage.rollups.annotate(
            team_id=Subquery(team.values("team_id")[:1]),
            team_name=Subquery(team.values("team__name")[:1]),
        ),
        "team_id",
        "team_name",
        active_users=Count("user_id", distinct=True),
    )
    total = _total_credits(groups)
    rows = [
        TeamUsage(
            team=row["team_name"] or "",
            team_id=row["team_id"],
            active_users=row["active_users"],
            total_runs=sums.runs,
            credits_consumed=sums.credits,
            excess_credits=sums.excess_credits,
            input_tokens_total=sums.input_tokens,
            output_tokens_total=sums.output_tokens,
            share_percent=_share(sums.credits, total),
        )
        for row, sums in groups
    ]
    return _by_credits(rows)


def usage_by_environment(
    *, user, subscription, timeframe, include_sub_accounts=False, filters=None
) -> list[EnvironmentUsage]:
    usage = _usage(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=include_sub_accounts,
        filters=filters,
    )
    groups = _grouped(
        usage.rollups,
        "environment_id",
        "environment__project__name",
        "environment__name",
        "environment__public_id",
        active_users=Count("user_id", distinct=True),
    )
    total = _total_credits(groups)
    rows = [
        EnvironmentUsage(
            environment=environment_label(
                row["environment__project__name"], row["environment__name"]
            ),
            environment_id=row["environment__public_id"],
            active_users=row["active_users"],
            total_runs=sums.runs,
            credits_consumed=sums.credits,
            excess_credits=sums.excess_credits,
            input_tokens_total=sums.input_tokens,
            output_tokens_total=sums.output_tokens,
            share_percent=_share(sums.credits, total),
        )
        for row, sums in groups
    ]
    return _by_credits(rows)


def usage_by_sub_account(*, user, subscription, timeframe, filters=None) -> list[SubAccountUsage]:
    """One row per account: the subscription and each of its sub-accounts, for its admins."""
    if not Subscription.objects.administered_by(user).filter(pk=subscription.pk).exists():
        raise NotAllowed("Usage by sub-account is for the subscription's admins.")
    usage = _usage(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=True,
        filters=filters,
    )
    groups = {
        row["subscription_id"]: (row, sums)
        for row, sums in _grouped(
            usage.rollups, "subscription_id", active_users=Count("user_id", distinct=True)
        )
    }
    total = _total_credits(list(groups.values()))
    rows = []
    for account in usage.accounts:
        row, sums = groups.get(account.pk, ({"active_users": 0}, _Sums()))
        rows.append(
            SubAccountUsage(
                sub_account=account.name,
                sub_account_id=account.pk,
                active_users=row["active_users"],
                total_runs=sums.runs,
                credits_consumed=sums.credits,
                excess_credits=sums.excess_credits,
                input_tokens_total=sums.input_tokens,
                output_tokens_total=sums.output_tokens,
                share_percent=_share(sums.credits, total),
            )
        )
    return _by_credits(rows)


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
    """Sums of the columns marked ``total`` (counts and credits)."""
    return {
        spec.name: sum(
            (getattr(row, spec.name) for row in rows), ZERO if spec.metadata["places"] else 0
        )
        for spec in dataclasses.fields(row_class)
        if spec.metadata["total"]
    }


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
)


@dataclass(frozen=True)
class CreditUsageExport:
    subscription: Subscription
    scope: str
    environment: Environment | None
    timeframe: Timeframe
    events: QuerySet  # named value rows of EXPORT_FIELDS, oldest first

    def total_credits(self) -> Decimal:
        return self.events.aggregate(total=Sum("credits"))["total"] or ZERO


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
    events = CreditEvent.objects.visible_to(user).filter(
        subscription=subscription, timestamp__gte=timeframe.start, timestamp__lt=timeframe.end
    )
    if environment is not None:
        events = events.filter(environment=environment)
    if scope == "mine":
        events = events.filter(user=user)
    elif scope == "environment":
        if not Environment.objects.managed_by(user).filter(pk=environment.pk).exists():
            raise NotAllowed("Exporting an environment needs its project manager role.")
    elif not Subscription.objects.administered_by(user).filter(pk=subscription.pk).exists():
        raise NotAllowed("Exporting the whole subscription is for its admins.")
    return CreditUsageExport(
        subscription=subscription,
        scope=scope,
        environment=environment,
        timeframe=timeframe,
        events=events.order_by("timestamp", "pk").values_list(*EXPORT_FIELDS, named=True),
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
