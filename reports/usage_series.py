"""Usage per window (local hour, day or month) grouped by any dimensions: the usage API's rows.

A ``UsageSeries`` states what ``GET /api/v1/usage/`` asks (who reads, which accounts, the
window, the range, the groupings and the filters, validated) and reads it through
``reports.usage.UsageQuery``: hours from the hourly rollup, days and months from the narrowest
daily rollup keyed by the groupings and filters, always through ``visible_to``. One SQL query
gives the groups of a page (another counts them), one the totals; names come in the same query
by joins. Nothing here speaks HTTP.

Dimensions and where they come from: user, environment, api_key, product, agent, model and
feature are rollup columns; team is the person's team now (as in the usage-by-team report);
project is the environment's; sub_account is the row's subscription (the subscription and its
sub-accounts); credit_type splits each group's credits into ``base`` (credits less grant and
excess credits), ``grant`` and ``excess``. Costs are each row's, rounded once
(``reports.costs``); rows split by credit type have none.
"""

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncMonth

from accounts.models import ApiKey, Environment, Project, Subscription, TeamMembership, User
from core.errors import DomainError
from core.money import CREDIT_PLACES
from credits.models import Agent
from credits.periods import (
    PLACEABLE_YEARS,
    is_placeable,
    is_placeable_day,
    local_date,
    local_midnight,
    month_start,
    previous_month_start,
)
from credits.pruning import HOURLY_USAGE_RETENTION_DAYS
from credits.rollups import narrowest_rollup

from .catalogue import PLANS_WITH_TEAM_VIEWS, PlanRequired
from .costs import RoundMoney, row_cost
from .selectors import environment_label
from .timeframes import days_timeframe
from .usage import SUMMED, ZERO, InvalidFilter, Sums, UsageQuery, joined, usage_query

WINDOWS = ("hour", "day", "month")
CREDIT_TYPES = ("base", "grant", "excess")
# The longest range a request may cover, per window.
MAX_HOURS = 31 * 24
MAX_DAYS = 366
MAX_MONTHS = 36
ONE_HOUR = timedelta(hours=1)


class InvalidUsageQuery(DomainError):
    code = "invalid_usage_query"
    message = "The usage query is invalid."


@dataclass(frozen=True)
class Dimension:
    """A grouping: the rollup dimension it reads (``None``: the subscription), its id and name
    fields among the grouped values (``name`` ``None``: the id is the name), the columns it
    writes, and whether it names people (plan gated like ``per_member`` reports)."""

    reads: str | None
    id_field: str
    name_field: str | None = None
    per_member: bool = False
    also: tuple[str, ...] = ()  # other fields its name is made of

    def columns(self, name: str) -> tuple[str, ...]:
        return (f"{name}_id", name) if self.name_field else (name,)


DIMENSIONS = {
    "user": Dimension("user", "user_id", "user__email", per_member=True),
    "team": Dimension("user", "team_id", "team_name", per_member=True),
    "environment": Dimension(
        "environment", "environment__public_id", "environment__name", also=("own_project__name",)
    ),
    "project": Dimension("environment", "own_project__id", "own_project__name"),
    "product": Dimension("product", "product__slug", "product__name"),
    "feature": Dimension("feature", "feature"),
    "agent": Dimension("agent", "agent_id", "own_agent__name"),
    "model": Dimension("model", "model"),
    "api_key": Dimension("api_key", "own_key__prefix", "own_key__name"),
    "credit_type": Dimension(None, "credit_type"),
    "sub_account": Dimension(None, "subscription_id", "subscription__name"),
}
# Id columns of numbers (and UUIDs), never text.
NUMERIC_IDS = ("user_id", "team_id", "environment_id", "project_id", "agent_id", "sub_account_id")
# What each row sums (the rollups' sums but the latency ones), then its cost and currency.
SUMMED_COLUMNS = (
    "credits",
    "excess_credits",
    "grant_credits",
    "runs",
    "failed_runs",
    "input_tokens",
    "output_tokens",
    "cost",
    "currency",
)


def _on_the_hour(instant: datetime, zone: ZoneInfo) -> bool:
    local = instant.astimezone(zone)
    return local == local.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Range:
    """What ``from`` and ``to`` resolve to: instants for hours, local days for days and
    months (``first_day`` to ``last_day``, included)."""

    start: datetime
    end: datetime
    first_day: date
    last_day: date


def parse_moment(value: str, *, parameter: str, zone: ZoneInfo) -> date | datetime:
    """A local day (``YYYY-MM-DD``) or an instant (ISO 8601; without an offset, the
    subscription's local time), in the years billing periods can be placed in."""
    try:
        if len(value) == 10:
            moment = date.fromisoformat(value)
            placeable = is_placeable_day(moment)
        else:
            moment = datetime.fromisoformat(value)
            moment = moment.astimezone(zone) if moment.tzinfo else moment.replace(tzinfo=zone)
            placeable = is_placeable(moment)
    except (ValueError, OverflowError):
        placeable = False
    if not placeable:
        raise InvalidUsageQuery(
            f"`{parameter}`: give a date (YYYY-MM-DD) or an ISO 8601 date and time, in the "
            f"years {PLACEABLE_YEARS}.",
            parameter=parameter,
        )
    return moment


def resolve_range(
    *, window: str, start: str | None, end: str | None, zone: ZoneInfo, now: datetime
) -> Range:
    """``from`` and ``to`` in ``zone``: a day stands for its local midnight (``from``) or the
    end of it (``to``, included); a date and time is an instant, ``from`` included, ``to``
    excluded. Defaults end now: the last 24 hours, 30 days or 12 months. Instants are UTC,
    so that hours add up across DST changes."""
    first = parse_moment(start, parameter="from", zone=zone) if start else None
    last = parse_moment(end, parameter="to", zone=zone) if end else None
    if window == "hour":
        this_hour = now.astimezone(zone).replace(minute=0, second=0, microsecond=0)
        end_at = _instant(last, zone, after=True) if last else _utc(this_hour) + ONE_HOUR
        start_at = _instant(first, zone, after=False) if first else end_at - timedelta(days=1)
        for name, moment in (("from", start_at), ("to", end_at)):
            if not _on_the_hour(moment, zone):
                raise InvalidUsageQuery(
                    f"`{name}` must start a local hour in {zone.key}.", parameter=name
                )
        _check_order(start_at < end_at)
        if end_at - start_at > timedelta(hours=MAX_HOURS):
            raise InvalidUsageQuery(
                f"Hour windows cover at most {MAX_HOURS // 24} days.", parameter="to"
            )
        if start_at < now - timedelta(days=HOURLY_USAGE_RETENTION_DAYS):
            raise InvalidUsageQuery(
                f"Hourly usage is kept for {HOURLY_USAGE_RETENTION_DAYS} days: use day "
                "windows before that.",
                parameter="from",
            )
        last_day = local_date(end_at - timedelta(microseconds=1), zone)
        return Range(start_at, end_at, local_date(start_at, zone), last_day)
    for name, moment in (("from", first), ("to", last)):
        if isinstance(moment, datetime):
            raise InvalidUsageQuery(
                f"`{name}`: give a local day (YYYY-MM-DD) for {window} windows.", parameter=name
            )
    last_day = last or local_date(now, zone)
    if first:
        first_day = first
    elif window == "day":
        first_day = last_day - timedelta(days=29)
    else:
        first_day = month_start(last_day)
        for _ in range(11):
            first_day = previous_month_start(first_day)
    _check_order(first_day <= last_day)
    months = (last_day.year - first_day.year) * 12 + last_day.month - first_day.month + 1
    if window == "day" and (last_day - first_day).days + 1 > MAX_DAYS:
        raise InvalidUsageQuery(f"Day windows cover at most {MAX_DAYS} days.", parameter="to")
    if window == "month" and months > MAX_MONTHS:
        raise InvalidUsageQuery(f"Month windows cover at most {MAX_MONTHS} months.", parameter="to")
    return Range(
        local_midnight(first_day, zone),
        local_midnight(last_day + timedelta(days=1), zone),
        first_day,
        last_day,
    )


def _utc(instant: datetime) -> datetime:
    return instant.astimezone(UTC)


def _instant(moment: date | datetime, zone: ZoneInfo, *, after: bool) -> datetime:
    if isinstance(moment, datetime):
        return _utc(moment)
    return local_midnight(moment + timedelta(days=1) if after else moment, zone)


def _check_order(ordered: bool) -> None:
    if not ordered:
        raise InvalidUsageQuery("`from` must come before `to`.", parameter="from")


def parse_group_by(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()] if value else []
    unknown = sorted(set(names) - set(DIMENSIONS))
    if unknown:
        raise InvalidUsageQuery(
            f"Unknown group_by {', '.join(unknown)}: choose among {', '.join(DIMENSIONS)}.",
            parameter="group_by",
            allowed=list(DIMENSIONS),
        )
    if len(set(names)) != len(names):
        raise InvalidUsageQuery("Name each group_by once.", parameter="group_by")
    return names


# --- Filters: each value must be among what the reader sees, else it is unknown -----------


# The filters this module checks itself, each with the rows' field it narrows and the rollup
# dimension that field needs (the others go to the reports' ``UsageFilterSet``).
OWN_FILTERS = {
    "user": ("user", "user"),
    "environment": ("environment", "environment"),
    "project": ("environment__project", "environment"),
    "agent": ("agent", "agent"),
    "api_key": ("api_key", "api_key"),
    "sub_account": ("subscription", None),
}
# Filters the reports already validate (``reports.filters.UsageFilterSet``), by the same name:
# team id, product slug, feature, model. They narrow any rollup in ``UsageQuery.visible``.
REPORT_FILTERS = ("team", "product", "feature", "model")
FILTERS = (*OWN_FILTERS, *REPORT_FILTERS, "credit_type")


def _unknown(name: str, value: str) -> InvalidFilter:
    return InvalidFilter(**{name: [f"Unknown {name} {value!r}."]})


def _candidates(name: str, principal, accounts: list[Subscription]) -> QuerySet:
    """What a filter's value must be among: what ``principal`` sees in ``accounts``."""
    if name == "user":
        return User.objects.visible_to(principal)
    if name == "sub_account":
        return Subscription.objects.visible_to(principal).filter(pk__in=[a.pk for a in accounts])
    model = {"environment": Environment, "project": Project, "agent": Agent, "api_key": ApiKey}
    return model[name].objects.visible_to(principal).filter(subscription__in=accounts)


def _lookup(name: str, value: str) -> dict:
    """How a filter's value names its object: EnvironmentId, key prefix, or id."""
    if name == "environment":
        try:
            return {"public_id": uuid.UUID(value)}
        except ValueError:
            raise _unknown(name, value) from None
    if name == "api_key":
        return {"prefix": value}
    if not (value.isdigit() and len(value) <= 18):
        raise _unknown(name, value)
    return {"pk": int(value)}


def _own_filter(name: str, value: str, principal, accounts: list[Subscription]) -> Q:
    found = _candidates(name, principal, accounts).filter(**_lookup(name, value)).first()
    if found is None:
        raise _unknown(name, value)
    return Q(**{OWN_FILTERS[name][0]: found})


# --- The series ---------------------------------------------------------------------------


@dataclass
class UsageSeries:
    usage: UsageQuery
    subscription: Subscription
    window: str
    range: Range
    group_by: list[str]
    credit_type: str | None = None  # the credit_type filter
    where: Q = field(default_factory=Q)
    read: set[str] = field(default_factory=set)  # the dimensions the filters read

    @property
    def zone(self) -> ZoneInfo:
        return self.subscription.zone

    @property
    def columns(self) -> list[str]:
        grouped = [c for name in self.group_by for c in DIMENSIONS[name].columns(name)]
        return ["window_start", *grouped, *SUMMED_COLUMNS]

    @property
    def text_columns(self) -> frozenset[str]:
        """The columns of what people typed (names, slugs, models): CSV neutralises them."""
        numbers = {"window_start", *SUMMED_COLUMNS, *NUMERIC_IDS}
        return frozenset(self.columns) - numbers

    @property
    def credit_types(self) -> tuple[str, ...] | None:
        """The credit types each group splits into, if any."""
        if "credit_type" in self.group_by:
            return (self.credit_type,) if self.credit_type else CREDIT_TYPES
        return (self.credit_type,) if self.credit_type else None

    def _rows(self) -> QuerySet:
        """The rollup rows the series adds up, with the window of each as ``window``."""
        if self.window == "hour":
            rows = self.usage.hourly_rows(self.range.start, self.range.end)
            return rows.filter(self.where).annotate(window=F("hour"))
        needed = {DIMENSIONS[name].reads for name in self.group_by} | self.read
        rollup = narrowest_rollup(
            needed - {None} | self.usage.dimensions(),
            whole_subscriptions=self.usage.whole_subscriptions,
        )
        if self.window == "day":
            return self.usage.daily_rows(rollup).filter(self.where).annotate(window=F("day"))
        # Whole months from monthly rows: each row lies in one month.
        return self.usage.rows(rollup).filter(self.where).annotate(window=TruncMonth("day"))

    def groups(self) -> QuerySet:
        """The sums per window and group, in window order, then by the groups' ids."""
        rows = self._rows()
        fields = []
        for name in self.group_by:
            if name == "credit_type":
                continue
            dimension = DIMENSIONS[name]
            rows = _joined(rows, name, self.usage.principal)
            fields += [dimension.id_field, *filter(None, [dimension.name_field]), *dimension.also]
        fields = list(dict.fromkeys(fields))
        values = rows.order_by().values("window", *fields).annotate(**SUMMED)
        ordering = [F("window").asc(), *(F(f).asc(nulls_first=True) for f in fields)]
        return values.order_by(*ordering)

    @property
    def currency(self) -> str | None:
        """The rows' cost currency; none when rows are split by credit type (the rollups
        keep one cost per row, not one per type) or the reader sees no money."""
        return None if self.credit_types else self.usage.currency

    def totals(self) -> list:
        """The totals' cells: every row added up; with a cost, over the groups, so that the
        cost is the sum of the rows' rounded costs (one query either way)."""
        currency = self.currency
        if currency is None:
            found = self._rows().aggregate(**SUMMED)
        else:
            over_groups = (
                self.groups()
                .order_by()
                .aggregate(
                    **{f"total_{name}": Sum(name) for name in SUMMED},
                    rounded_cost=Sum(RoundMoney("sum_cost", currency=currency)),
                )
            )
            found = {name: over_groups[f"total_{name}"] for name in SUMMED}
        total = Sums.of(found).quantized()
        if self.credit_type:
            total = _typed(total, self.credit_type)
        if currency is None:
            return sum_cells(total, None, None)
        zero = row_cost(ZERO, currency)
        return sum_cells(total, (over_groups["rounded_cost"] or zero) + zero, currency)

    def cells(self, group: dict) -> list[list]:
        """The rows of one group, one per credit type if split, as cells of ``columns``."""
        sums = Sums.of(group).quantized()
        window = self.window_start(group["window"])
        currency = self.currency
        cost = row_cost(sums.cost, currency)
        return [
            [
                window,
                *self._keys(group, credit_type),
                *sum_cells(_typed(sums, credit_type) if credit_type else sums, cost, currency),
            ]
            for credit_type in self.credit_types or (None,)
        ]

    def _keys(self, group: dict, credit_type: str | None) -> list:
        keys = []
        for name in self.group_by:
            dimension = DIMENSIONS[name]
            if name == "credit_type":
                keys.append(credit_type)
            elif dimension.name_field is None:
                keys.append(group[dimension.id_field] or None)  # "": no model, no feature
            elif name == "environment" and group[dimension.id_field] is not None:
                label = environment_label(group["own_project__name"], group["environment__name"])
                keys += [group[dimension.id_field], label]
            else:
                keys += [group[dimension.id_field], group[dimension.name_field]]
        return keys

    def window_start(self, value) -> str:
        if isinstance(value, datetime):
            return value.astimezone(self.zone).isoformat()
        return value.isoformat()

    def pages(self) -> "Rows":
        return Rows(self)


def sum_cells(sums: Sums, cost: Decimal | None, currency: str | None) -> list:
    return [
        f"{sums.credits:f}",
        f"{sums.excess_credits:f}",
        f"{sums.grant_credits:f}",
        sums.runs,
        sums.failed_runs,
        sums.input_tokens,
        sums.output_tokens,
        None if cost is None else f"{cost:f}",
        currency if cost is not None else None,
    ]


def _typed(sums: Sums, credit_type: str) -> Sums:
    """The base, grant or excess part of ``sums``: runs and tokens count with the base
    credits."""
    none = Decimal(0).quantize(CREDIT_PLACES)
    if credit_type == "base":
        return Sums(
            credits=sums.base_credits,
            excess_credits=none,
            grant_credits=none,
            runs=sums.runs,
            failed_runs=sums.failed_runs,
            input_tokens=sums.input_tokens,
            output_tokens=sums.output_tokens,
        )
    if credit_type == "grant":
        return Sums(
            credits=sums.grant_credits, excess_credits=none, grant_credits=sums.grant_credits
        )
    return Sums(credits=sums.excess_credits, excess_credits=sums.excess_credits, grant_credits=none)


# The relations a grouping's names are read through, joined on the row's own subscription.
JOINS = {
    "environment": ("own_project", "environment__project"),
    "project": ("own_project", "environment__project"),
    "agent": ("own_agent", "agent"),
    "api_key": ("own_key", "api_key"),
}


def _joined(rows: QuerySet, name: str, principal) -> QuerySet:
    """The joins and annotations a grouping's names need."""
    if name in JOINS:
        alias, relation = JOINS[name]
        return rows.annotate(**{alias: joined(relation)})
    if name == "team":
        # The person's team now, among the teams the reader sees (as the usage-by-team
        # report names them); a team the reader may not see is not named.
        membership = TeamMembership.objects.visible_to(principal).filter(
            subscription_id=OuterRef("subscription_id"),
            user_id=OuterRef("user_id"),
            team__subscription_id=OuterRef("subscription_id"),
        )
        return rows.annotate(
            team_id=Subquery(membership.values("team_id")[:1]),
            team_name=Subquery(membership.values("team__name")[:1]),
        )
    return rows


class Rows(Sequence):
    """The series' rows for the paginator: each group is one row, or one per credit type;
    a page reads only its own groups (``count`` counts them in SQL)."""

    def __init__(self, series: UsageSeries):
        self.series = series
        self.per_group = len(series.credit_types or (None,))
        self.groups = series.groups()

    def count(self) -> int:
        return self.groups.count() * self.per_group

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index):
        if not isinstance(index, slice):
            return self[index : index + 1][0]
        start, stop = index.start or 0, index.stop
        first = start // self.per_group
        last = math.ceil(stop / self.per_group) if stop is not None else None
        rows = [row for group in self.groups[first:last] for row in self.series.cells(group)]
        skip = start - first * self.per_group
        return rows[skip : None if stop is None else skip + stop - start]

    def __iter__(self):
        for group in self.groups.iterator():
            yield from self.series.cells(group)


def usage_series(
    *,
    principal,
    subscription: Subscription,
    window: str,
    group_by: str,
    start: str | None,
    end: str | None,
    filters: dict[str, str],  # the filters given, by name
    include_sub_accounts: bool,
    now: datetime,
) -> UsageSeries:
    """The series ``principal`` asked for, checked: window, range, groupings (per-person ones
    need ``Subscription.has_team_views``, as ``per_member`` reports do) and filters."""
    if window not in WINDOWS:
        raise InvalidUsageQuery(
            f"Unknown window {window!r}: choose hour, day or month.",
            parameter="window",
            allowed=list(WINDOWS),
        )
    names = parse_group_by(group_by)
    person_groupings = [name for name in names if DIMENSIONS[name].per_member]
    if person_groupings and not subscription.has_team_views:
        raise PlanRequired(
            f"Grouping by {' and '.join(person_groupings)} names each member: available on "
            f"the {PLANS_WITH_TEAM_VIEWS} plans (this subscription is on the "
            f"{subscription.get_plan_display()} plan).",
            plan=subscription.plan,
        )
    empty = sorted(name for name, value in filters.items() if not value)
    if empty:
        raise InvalidFilter(**{name: ["Give a value, or leave the filter out."] for name in empty})
    zone = subscription.zone
    resolved = resolve_range(window=window, start=start, end=end, zone=zone, now=now)
    credit_type = filters.get("credit_type") or None
    if credit_type is not None and credit_type not in CREDIT_TYPES:
        raise InvalidFilter(credit_type=[f"Unknown credit_type {credit_type!r}."])
    usage = usage_query(
        user=principal,
        subscription=subscription,
        timeframe=days_timeframe(
            name="custom", first_day=resolved.first_day, last_day=resolved.last_day, zone=zone
        ),
        include_sub_accounts=include_sub_accounts,
        filters={name: filters[name] for name in REPORT_FILTERS if filters.get(name)},
    )
    where, read = Q(), set()
    for name, (_, dimension) in OWN_FILTERS.items():
        if filters.get(name):
            where &= _own_filter(name, filters[name], principal, usage.accounts)
            read |= {dimension} - {None}
    return UsageSeries(
        usage=usage,
        subscription=subscription,
        window=window,
        range=resolved,
        group_by=names,
        credit_type=credit_type,
        where=where,
        read=read,
    )
