"""Reads for the usage reports and the credit usage export.

Every read starts from the scoping layer (``visible_to``): members get their own usage,
project managers their environments' (and their own elsewhere), subscription admins their
subscriptions' and, when asked, their sub-accounts'.

Figures come from rollups, never from a scan of the ledger, so that a report costs about the
same whatever the ledger holds (see ``credits.rollups``). A report reads the narrowest rollup
keyed by every dimension it groups or filters by (``narrowest_rollup``): ``ModelRollup``,
``AgentRollup``, ``ProductRollup``, ``PersonRollup`` or ``SubscriptionRollup``, with a row per
local month for the whole months of the timeframe and a row per local day for the days around
them; ``DailyUsage`` when none is narrow enough. Rollups without environment and user serve
only readers who administer every account of the report; anyone else reads rollups keyed by
person, through ``visible_to``.

* **p95 latency** is read from the latency histograms of ``AgentRollup`` and ``ModelRollup``
  (runs per logarithmic bucket): the same interpolation as PostgreSQL's
  ``percentile_cont(0.95)``, each of the two latencies it interpolates between read as its
  bucket's value, so the result is within 1% of ``percentile_cont`` (exact below about 50 ms,
  where each bucket is one millisecond), given to 0.01 ms.
* **Sessions** are counted once per local day on which they ran with the agent: a session that
  spans midnight counts on both days. ``AgentRollup`` keeps that count.

When the report's rollup keeps no histogram or sessions (a reader who sees less than whole
subscriptions; a filter it is not keyed by: team, product, feature, the model on the agent
report, the agent on the model report), they come from the timeframe's ledger rows that the
reader may see, with the same meaning: sessions per local day, and ``percentile_cont(0.95)``
itself. The export reads one
row per event, streamed from a server-side cursor.

Each report is one function returning rows, dataclasses whose fields are the report's columns
in order. Credits and ratios are exact ``Decimal`` values quantized to the column's places
(half up); integers are counts.
"""

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from uuid import UUID

from django.db import connections
from django.db.models import (
    Aggregate,
    Case,
    CharField,
    Count,
    Exists,
    F,
    FilteredRelation,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Concat, TruncDate

from accounts.models import (
    Environment,
    Membership,
    Role,
    Subscription,
    TeamMembership,
)
from core.errors import DomainError
from core.money import CREDIT_PLACES
from credits.errors import UnknownEnvironment
from credits.models import Agent, CreditEvent
from credits.rollups import (
    Rollup,
    covering,
    latency_percentile,
    narrowest_rollup,
    recorded_after,
)

from .filters import UsageFilterSet
from .timeframes import Timeframe, current_billing_period

HUNDREDTHS = Decimal("0.01")
RATE = Decimal("0.0001")
ZERO = Decimal("0.0000")
P95 = Decimal("0.95")


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
CREDITS_CONSUMED = column("Credits, adjustments included.", places=CREDIT_PLACES, total=True)
EXCESS_CREDITS = column(
    "Credits beyond the base allocation (soft limit mode).", places=CREDIT_PLACES, total=True
)
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
NO_ENVIRONMENT = "No environment"


@dataclass(frozen=True)
class UserUsage:
    user_email: str = field(
        metadata=column(
            "The user's email; for what an API key did alone, the key's name (and its "
            f'account\'s, in brackets, when sub-accounts are included); "{NO_USER}" for usage '
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
    agent_name: str = field(
        metadata=column(f'The agent\'s name; "{NO_AGENT}" for runs without an agent.')
    )
    agent_id: int | None = field(metadata=column("The agent's id."))
    model_used: str = field(metadata=column("The agent's model."))
    agent_type: str = field(metadata=column("The agent's type, e.g. single_task."))
    total_runs: int = field(metadata=RUNS)
    total_sessions: int = field(
        metadata=column(
            "Sessions of the runs, each counted once per local day on which it ran with the agent."
        )
    )
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
    model: str = field(
        metadata=column(f'The model the runs used; "{NO_MODEL}" when none was given.')
    )
    total_runs: int = field(metadata=RUNS)
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    input_tokens_total: int = field(metadata=INPUT_TOKENS)
    output_tokens_total: int = field(metadata=OUTPUT_TOKENS)
    avg_latency_ms: Decimal | None = field(metadata=AVG_LATENCY)
    p95_latency_ms: Decimal | None = field(metadata=P95_LATENCY)
    error_rate: Decimal | None = field(metadata=ERROR_RATE)


@dataclass(frozen=True)
class ProductUsage:
    product: str = field(
        metadata=column(f'The product\'s name; "{NO_PRODUCT}" for usage without a product.')
    )
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    avg_credits_per_day: Decimal = field(
        metadata=column("Credits per local day of the timeframe.", places=CREDIT_PLACES)
    )
    excess_credits: Decimal = field(metadata=EXCESS_CREDITS)
    share_percent: Decimal = field(metadata=SHARE)


@dataclass(frozen=True)
class FeatureUsage:
    feature: str = field(metadata=column(f'The feature; "{NO_FEATURE}" when none was given.'))
    total_runs: int = field(metadata=RUNS)
    credits_consumed: Decimal = field(metadata=CREDITS_CONSUMED)
    excess_credits: Decimal = field(metadata=EXCESS_CREDITS)
    input_tokens_total: int = field(metadata=INPUT_TOKENS)
    output_tokens_total: int = field(metadata=OUTPUT_TOKENS)
    share_percent: Decimal = field(metadata=SHARE)


@dataclass(frozen=True)
class TeamUsage:
    team: str = field(
        metadata=column(
            f'The team\'s name; "{NO_TEAM}" for people in no team, API keys and adjustments.'
        )
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
    environment: str = field(
        metadata=column(
            f'Project name / Environment name; "{NO_ENVIRONMENT}" for usage outside any.'
        )
    )
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
    to, or by default their first top-level one (oldest first). Its ``administered`` says
    whether ``user`` administers it."""
    subscriptions = _with_administered(Subscription.objects.visible_to(user), user)
    if subscription_id is not None:
        subscriptions = subscriptions.filter(pk=subscription_id)
    subscription = subscriptions.order_by(F("parent_id").asc(nulls_first=True), "pk").first()
    if subscription is None:
        raise SubscriptionNotFound(subscription=subscription_id)
    return subscription


@dataclass(frozen=True)
class _Usage:
    """What a report reads: its accounts and timeframe, the filters (validated), and whether
    the reader administers every one of the accounts (then rollups without environment and
    user serve them)."""

    user: object
    accounts: list[Subscription]
    timeframe: Timeframe
    filterset: UsageFilterSet
    whole_subscriptions: bool
    # Per rollup read: whether the timeframe's last month has nothing after its last day.
    _month_ends_there: dict = field(default_factory=dict, compare=False, repr=False)

    def rollup(self, *grouped: str) -> Rollup:
        """The narrowest rollup keyed by ``grouped`` and by what the filters read."""
        return narrowest_rollup(
            {*grouped, *self.filterset.dimensions()}, whole_subscriptions=self.whole_subscriptions
        )

    def rows(self, rollup: Rollup) -> QuerySet:
        """The rollup's rows of the timeframe that the reader may see, filtered."""
        first_day, last_day = self.timeframe.first_day, self.timeframe.last_day
        if rollup.monthly and rollup not in self._month_ends_there:
            self._month_ends_there[rollup] = not recorded_after(rollup, self.accounts, last_day)
        rows = rollup.model.objects.visible_to(self.user).filter(
            covering(
                rollup,
                first_day,
                last_day,
                month_ends_there=self._month_ends_there.get(rollup, False),
            ),
            subscription__in=self.accounts,
        )
        return self.filterset.filter_queryset(rows)

    def events(self) -> QuerySet:
        """The ledger rows of the timeframe that the reader may see, filtered."""
        events = CreditEvent.objects.visible_to(self.user).filter(
            _during(self.accounts, self.timeframe, "timestamp")
        )
        return self.filterset.filter_queryset(events)


def _usage(*, user, subscription, timeframe, include_sub_accounts, filters) -> _Usage:
    accounts = _accounts(user, subscription, include_sub_accounts=include_sub_accounts)
    whole_subscriptions = all(account.administered for account in accounts)
    filterset = UsageFilterSet(
        filters or {},
        user=user,
        accounts=accounts,
        whole_subscriptions=whole_subscriptions,
    )
    if not filterset.is_valid():
        raise InvalidFilter(**{name: list(errors) for name, errors in filterset.errors.items()})
    return _Usage(
        user=user,
        accounts=accounts,
        timeframe=timeframe,
        filterset=filterset,
        whole_subscriptions=whole_subscriptions,
    )


def _report(build: Callable[[_Usage], list]) -> Callable[..., list]:
    """A report as callers call it (the reader, the subscription, the timeframe, sub-accounts
    or not, the filters), built from what it reads (``_usage``)."""

    @functools.wraps(build)
    def report(*, user, subscription, timeframe, include_sub_accounts=False, filters=None):
        return build(
            _usage(
                user=user,
                subscription=subscription,
                timeframe=timeframe,
                include_sub_accounts=include_sub_accounts,
                filters=filters,
            )
        )

    return report


def _accounts(user, subscription, *, include_sub_accounts: bool) -> list[Subscription]:
    """The subscription first, then the sub-accounts ``user`` sees if asked, each with
    ``administered``: no query for the subscription alone from ``report_subscription``."""
    if not include_sub_accounts and hasattr(subscription, "administered"):
        return [subscription]
    accounts = Q(pk=subscription.pk)
    if include_sub_accounts:
        accounts |= Q(parent=subscription)
    found = _with_administered(Subscription.objects.visible_to(user).filter(accounts), user)
    return sorted(found, key=lambda account: account.pk != subscription.pk)


def _with_administered(subscriptions: QuerySet, user) -> QuerySet:
    administered = Subscription.objects.administered_by(user).filter(pk=OuterRef("pk"))
    return subscriptions.annotate(administered=Exists(administered))


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


def _joined(relation: str, through: str | None = None) -> FilteredRelation:
    """``relation`` joined on the row's subscription as well as its id: a distributed database
    (Citus) keeps a join on one node only when it includes the distribution column. Rows of
    one subscription point at their own subscription's objects, so the result is the same."""
    through = through or relation
    return FilteredRelation(
        relation, condition=Q(**{f"{through}__subscription_id": F("subscription_id")})
    )


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
class _RunStats:
    sessions: int = 0
    runs_in_sessions: int = 0
    p95_latency_ms: Decimal | None = None

    @property
    def avg_runs_per_session(self) -> Decimal | None:
        return _ratio(self.runs_in_sessions, self.sessions, HUNDREDTHS)


def _run_stats(
    usage: _Usage, rollup: Rollup, group: str, *, with_sessions=False, sessions: dict | None = None
) -> dict:
    """The p95 latency and, ``with_sessions``, the sessions per ``group`` (``agent_id`` or
    ``model``).

    ``sessions``: (sessions, runs in sessions) per group when ``rollup`` keeps them. The p95
    comes from the histograms of ``rollup`` when it keeps them. Whatever is left is read from
    the ledger, in one query.
    """
    count_sessions = with_sessions and sessions is None
    ledger = {}
    if count_sessions or not rollup.latency:
        ledger = _ledger_stats(usage, group, sessions=count_sessions, p95=not rollup.latency)
    if count_sessions:
        sessions = {key: (stats.sessions, stats.runs_in_sessions) for key, stats in ledger.items()}
    if rollup.latency:
        p95 = _histogram_p95(usage.rows(rollup), group)
    else:
        p95 = {key: stats.p95_latency_ms for key, stats in ledger.items()}
    sessions = sessions or {}
    return {
        key: _RunStats(*sessions.get(key, (0, 0)), p95_latency_ms=p95.get(key))
        for key in {*sessions, *p95}
    }


def _histogram_p95(rows: QuerySet, group: str) -> dict:
    """The p95 latency per ``group`` from the rows' latency histograms, added up bucket by
    bucket by the database: one query that returns at most a row per group and bucket (a few
    hundred buckets), however many runs. Buckets are grouped as integers: sorting their text
    keys by collation took a third of the query."""
    histograms, params = rows.order_by().values(group, "latency_histogram").query.sql_with_params()
    buckets: dict = {}
    with connections[rows.db].cursor() as cursor:
        cursor.execute(
            f"SELECT r.{group}, CAST(bucket.key AS integer), SUM(bucket.value::bigint) "  # noqa: S608 (our names)
            f"FROM ({histograms}) r, jsonb_each_text(r.latency_histogram) bucket GROUP BY 1, 2",
            params,
        )
        for key, bucket, count in cursor.fetchall():
            buckets.setdefault(key, {})[int(bucket)] = int(count)
    return {
        key: latency_percentile(runs_per_bucket, P95).quantize(HUNDREDTHS, ROUND_HALF_UP)
        for key, runs_per_bucket in buckets.items()
    }


def _ledger_stats(usage: _Usage, group: str, *, sessions: bool, p95: bool) -> dict:
    """Sessions (once per local day, as ``AgentRollup`` counts them) and ``percentile_cont``
    per ``group``, from the ledger rows of the timeframe, in one query."""
    events = usage.events().filter(kind=CreditEvent.Kind.USAGE)
    in_session = ~Q(session_id="")
    aggregates = {}
    if sessions:
        session_day = Concat(
            Cast(_local_day(usage.accounts), output_field=CharField()),
            Value(" "),
            "session_id",
            output_field=CharField(),
        )
        aggregates["sessions"] = Count(session_day, distinct=True, filter=in_session)
        aggregates["runs_in_sessions"] = Count("pk", filter=in_session)
    if p95:
        aggregates["p95"] = PercentileCont("latency_ms", fraction=P95)
    if not aggregates:
        return {}
    return {
        row[group]: _RunStats(
            sessions=row.get("sessions", 0),
            runs_in_sessions=row.get("runs_in_sessions", 0),
            p95_latency_ms=_from_float(row.get("p95"), HUNDREDTHS),
        )
        for row in events.order_by().values(group).annotate(**aggregates)
    }


def _local_day(accounts: list[Subscription]):
    """The event's local date in its own account's time zone."""
    days = [TruncDate("timestamp", tzinfo=account.zone) for account in accounts]
    if len(days) == 1:
        return days[0]
    return Case(
        *(When(subscription=account, then=day) for account, day in zip(accounts, days, strict=True))
    )


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


@_report
def usage_by_user(usage: _Usage) -> list[UserUsage]:
    """One row per person, and one per API key for what keys did with nobody named."""
    groups = _grouped(
        usage.rows(usage.rollup("user", "api_key"))
        .annotate(own_key=_joined("api_key"))
        .annotate(
            key_id=Case(When(user__isnull=True, then=F("api_key_id"))),
            key_name=Case(When(user__isnull=True, then=F("own_key__name"))),
            # A key belongs to the row's own subscription (the join above says so).
            key_account=Case(
                When(user__isnull=True, api_key__isnull=False, then=F("subscription__name"))
            ),
        ),
        "user_id",
        "user__email",
        "key_id",
        "key_name",
        "key_account",
    )
    user_ids = [row["user_id"] for row, _ in groups if row["user_id"] is not None]
    roles = _roles(user_ids, usage.accounts)
    agents_created = dict(
        Agent.objects.visible_to(usage.user)
        .filter(_during(usage.accounts, usage.timeframe, "created_at"), created_by_id__in=user_ids)
        .order_by()
        .values("created_by_id")
        .annotate(count=Count("pk"))
        .values_list("created_by_id", "count")
    )
    rows = []
    for row, sums in groups:
        if row["user_id"] is not None:
            email, role = row["user__email"], roles.get(row["user_id"], "")
        elif row["key_id"]:
            email, role = _key_label(row["key_name"], row["key_account"], usage), "api_key"
        else:
            email, role = NO_USER, ""
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


def _key_label(name: str, account: str, usage: _Usage) -> str:
    """A key's name, and its account's beside it when the report covers several accounts
    (each sub-account has a key called "Demo key" in the demo)."""
    return f"{name} ({account})" if len(usage.accounts) > 1 else name


def _roles(user_ids: list[int], accounts: list[Subscription]) -> dict[int, str]:
    """Each user's highest role in ``accounts``."""
    roles: dict[int, str] = {}
    memberships = Membership.objects.filter(subscription__in=accounts, user_id__in=user_ids)
    for user_id, role in memberships.values_list("user_id", "role"):
        if user_id not in roles or _ROLE_RANK[role] < _ROLE_RANK[roles[user_id]]:
            roles[user_id] = role
    return roles


@_report
def usage_by_agent(usage: _Usage) -> list[AgentUsage]:
    """One row per agent; runs without an agent are one row with an empty name."""
    rollup = usage.rollup("agent")
    sessions = {"sessions": Sum("sessions"), "session_runs": Sum("session_runs")}
    groups = _grouped(
        usage.rows(rollup).annotate(own_agent=_joined("agent")),
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
    stats = _run_stats(usage, rollup, "agent_id", with_sessions=True, sessions=counted)
    rows = []
    for row, sums in groups:
        run_stats = stats.get(row["agent_id"], _RunStats())
        rows.append(
            AgentUsage(
                agent_name=row["own_agent__name"] or NO_AGENT,
                agent_id=row["agent_id"],
                model_used=row["own_agent__model"] or "",
                agent_type=row["own_agent__agent_type"] or "",
                total_runs=sums.runs,
                total_sessions=run_stats.sessions,
                avg_runs_per_session=run_stats.avg_runs_per_session,
                credits_consumed=sums.credits,
                input_tokens_total=sums.input_tokens,
                output_tokens_total=sums.output_tokens,
                avg_latency_ms=sums.avg_latency_ms,
                p95_latency_ms=run_stats.p95_latency_ms,
                error_rate=sums.error_rate,
            )
        )
    return _by_credits(rows)


@_report
def usage_by_model(usage: _Usage) -> list[ModelUsage]:
    rollup = usage.rollup("model")
    stats = _run_stats(usage, rollup, "model")
    rows = [
        ModelUsage(
            model=row["model"] or NO_MODEL,
            total_runs=sums.runs,
            credits_consumed=sums.credits,
            input_tokens_total=sums.input_tokens,
            output_tokens_total=sums.output_tokens,
            avg_latency_ms=sums.avg_latency_ms,
            p95_latency_ms=stats.get(row["model"], _RunStats()).p95_latency_ms,
            error_rate=sums.error_rate,
        )
        for row, sums in _grouped(usage.rows(rollup), "model")
    ]
    return _by_credits(rows)


@_report
def usage_by_product(usage: _Usage) -> list[ProductUsage]:
    groups = _grouped(usage.rows(usage.rollup("product")), "product_id", "product__name")
    total = _total_credits(groups)
    rows = [
        ProductUsage(
            product=row["product__name"] or NO_PRODUCT,
            credits_consumed=sums.credits,
            avg_credits_per_day=_ratio(sums.credits, usage.timeframe.days, CREDIT_PLACES),
            excess_credits=sums.excess_credits,
            share_percent=_share(sums.credits, total),
        )
        for row, sums in groups
    ]
    return _by_credits(rows)


@_report
def usage_by_feature(usage: _Usage) -> list[FeatureUsage]:
    groups = _grouped(usage.rows(usage.rollup("feature")), "feature")
    total = _total_credits(groups)
    rows = [
        FeatureUsage(
            feature=row["feature"] or NO_FEATURE,
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


@_report
def usage_by_team(usage: _Usage) -> list[TeamUsage]:
    """One row per team of the people with usage (their team now, not when they used it)."""
    team = TeamMembership.objects.filter(
        subscription_id=OuterRef("subscription_id"),
        user_id=OuterRef("user_id"),
        team__subscription_id=OuterRef("subscription_id"),
    )
    groups = _grouped(
        usage.rows(usage.rollup("user")).annotate(
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
            team=row["team_name"] or NO_TEAM,
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


@_report
def usage_by_environment(usage: _Usage) -> list[EnvironmentUsage]:
    groups = _grouped(
        usage.rows(usage.rollup("environment", "user")).annotate(
            own_project=_joined("environment__project")
        ),
        "environment_id",
        "own_project__name",
        "environment__name",
        "environment__public_id",
        active_users=Count("user_id", distinct=True),
    )
    total = _total_credits(groups)
    rows = [
        EnvironmentUsage(
            environment=environment_label(row["own_project__name"], row["environment__name"])
            or NO_ENVIRONMENT,
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
            usage.rows(usage.rollup("user")),
            "subscription_id",
            active_users=Count("user_id", distinct=True),
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
