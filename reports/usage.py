"""The one usage query: credits by some dimensions over some local days, for one reader.

Every read of usage figures (the reports, the usage pages, the scheduled emails) states what it
wants as a ``UsageQuery`` (who reads, which accounts, which days, which filters) and groups by
the dimensions it shows. The query picks the narrowest rollup keyed by all of them
(``credits.rollups.narrowest_rollup``) and reads it through ``visible_to``, so the figures cost
the same whatever the ledger holds and nobody sees more than their scope. ``Sums`` is the one
row type of the summed columns.
"""

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import F, FilteredRelation, Q, QuerySet, Sum

from accounts.models import Subscription
from core.errors import DomainError
from core.money import CREDIT_PLACES
from credits.models import CreditEvent
from credits.rollups import DAY, HOURLY, Rollup, covering, narrowest_rollup, recorded_after

from .costs import reader_currency, with_currency
from .filters import UsageFilterSet
from .timeframes import Timeframe

ZERO = Decimal("0.0000")
HUNDREDTHS = Decimal("0.01")
RATE = Decimal("0.0001")


class InvalidFilter(DomainError):
    code = "invalid_filter"
    message = "Some filters are invalid."


def ratio(numerator, denominator, places: Decimal) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(places, ROUND_HALF_UP)


@dataclass(frozen=True)
class Sums:
    """The columns every rollup adds up, summed over a group of rollup rows."""

    credits: Decimal = ZERO
    excess_credits: Decimal = ZERO
    grant_credits: Decimal = ZERO
    cost: Decimal = ZERO  # unrounded: rounded once per row shown (``reports.costs``)
    runs: int = 0
    failed_runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms_total: int = 0
    latency_samples: int = 0

    @classmethod
    def of(cls, row: dict) -> "Sums":
        # PostgreSQL sums bigints as numeric: back to the column's type.
        return cls(**{name: spec.type(row[f"sum_{name}"] or 0) for name, spec in _FIELDS.items()})

    def __add__(self, other: "Sums") -> "Sums":
        return Sums(*(getattr(self, name) + getattr(other, name) for name in _FIELDS))

    def quantized(self) -> "Sums":
        """Credits to the ledger's places (sums of rounded values can carry more)."""
        return dataclasses.replace(
            self,
            credits=self.credits.quantize(CREDIT_PLACES, ROUND_HALF_UP),
            excess_credits=self.excess_credits.quantize(CREDIT_PLACES, ROUND_HALF_UP),
            grant_credits=self.grant_credits.quantize(CREDIT_PLACES, ROUND_HALF_UP),
        )

    @property
    def base_credits(self) -> Decimal:
        """Credits drawn from the base allocation: neither from a grant nor excess."""
        return self.credits - self.grant_credits - self.excess_credits

    @property
    def avg_latency_ms(self) -> Decimal | None:
        return ratio(self.latency_ms_total, self.latency_samples, HUNDREDTHS)

    @property
    def error_rate(self) -> Decimal | None:
        return ratio(self.failed_runs, self.runs, RATE)


_FIELDS = {spec.name: spec for spec in dataclasses.fields(Sums)}
SUMMED = {f"sum_{name}": Sum(name) for name in _FIELDS}


def grouped(rows: QuerySet, *group: str, **annotations) -> list[tuple[dict, Sums]]:
    """One SQL query: ``rows`` summed per ``group``."""
    values = rows.order_by().values(*group).annotate(**SUMMED, **annotations)
    return [(row, Sums.of(row)) for row in values]


def joined(relation: str, through: str | None = None) -> FilteredRelation:
    """``relation`` joined on the row's subscription as well as its id: a distributed database
    (Citus) keeps a join on one node only when it includes the distribution column. Rows of
    one subscription point at their own subscription's objects, so the result is the same."""
    through = through or relation
    return FilteredRelation(
        relation, condition=Q(**{f"{through}__subscription_id": F("subscription_id")})
    )


@dataclass(frozen=True)
class UsageQuery:
    """What a read of usage covers: the reader (``principal``), the accounts and the days,
    the report filters (validated) and ``narrowed`` (dimension -> value: an environment or a
    person the page is about). ``whole_subscriptions``: the reader administers every one of
    the accounts, so rollups without environment and user serve them."""

    principal: object
    accounts: list[Subscription]
    timeframe: Timeframe
    filterset: UsageFilterSet | None = None
    whole_subscriptions: bool = False
    narrowed: dict = field(default_factory=dict)
    # Per rollup read: whether the timeframe's last month has nothing after its last day.
    _month_ends_there: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def currency(self) -> str | None:
        """What the accounts' usage costs are in (``reports.costs``); None: no cost."""
        return reader_currency(self.accounts, self.principal)

    def dimensions(self, *grouped_by: str) -> set[str]:
        filtered = self.filterset.dimensions() if self.filterset is not None else set()
        return {*grouped_by, *filtered, *self.narrowed}

    def rollup(self, *grouped_by: str) -> Rollup:
        """The narrowest rollup keyed by ``grouped_by`` and by what the filters read."""
        return narrowest_rollup(
            self.dimensions(*grouped_by), whole_subscriptions=self.whole_subscriptions
        )

    def visible(self, rollup: Rollup) -> QuerySet:
        """All the rows of ``rollup`` in the accounts that the reader may see, narrowed and
        filtered, whatever their day."""
        rows = rollup.model.objects.visible_to(self.principal).filter(
            subscription__in=self.accounts, **self.narrowed
        )
        return self.filterset.filter_queryset(rows) if self.filterset is not None else rows

    def rows(self, rollup: Rollup) -> QuerySet:
        """The rows of ``rollup`` that add up to the timeframe: whole months from monthly
        rows where it has them."""
        first_day, last_day = self.timeframe.first_day, self.timeframe.last_day
        if rollup.monthly and rollup not in self._month_ends_there:
            self._month_ends_there[rollup] = not recorded_after(rollup, self.accounts, last_day)
        return self.visible(rollup).filter(
            covering(
                rollup,
                first_day,
                last_day,
                month_ends_there=self._month_ends_there.get(rollup, False),
            )
        )

    def daily_rows(self, rollup: Rollup, *ranges: tuple[date, date]) -> QuerySet:
        """The daily rows of ``rollup`` on the timeframe's days, or on ``ranges`` (first and
        last day each): for figures shown per day."""
        ranges = ranges or ((self.timeframe.first_day, self.timeframe.last_day),)
        days = Q()
        for first_day, last_day in ranges:
            days |= Q(day__range=(first_day, last_day))
        rows = self.visible(rollup).filter(days)
        return rows.filter(grain=DAY) if rollup.monthly else rows

    def hourly_rows(self, start: datetime, end: datetime) -> QuerySet:
        """The hourly rollup's rows of the local hours that start from ``start`` (included)
        to ``end`` (excluded), instants: every dimension, so any grouping reads them."""
        return self.visible(HOURLY).filter(hour__gte=start, hour__lt=end)

    def sums(self, *group: str, **annotations) -> list[tuple[dict, Sums]]:
        """The timeframe's usage summed per ``group`` (dimension fields, e.g. ``user_id``,
        ``product__name``), from the narrowest rollup holding them."""
        dimensions = {name.split("__")[0].removesuffix("_id") for name in group}
        return grouped(self.rows(self.rollup(*dimensions)), *group, **annotations)

    def total(self) -> Sums:
        """The timeframe's usage, summed: one query."""
        return Sums.of(self.rows(self.rollup()).aggregate(**SUMMED))

    def events(self) -> QuerySet:
        """The ledger rows of the timeframe that the reader may see, filtered."""
        events = CreditEvent.objects.visible_to(self.principal).filter(
            during(self.accounts, self.timeframe, "timestamp"), **self.narrowed
        )
        return self.filterset.filter_queryset(events) if self.filterset is not None else events


def usage_query(
    *, user, subscription, timeframe, include_sub_accounts=False, filters=None
) -> UsageQuery:
    """The query of a report: ``subscription`` (and the sub-accounts ``user`` sees, if asked)
    over ``timeframe``, with the report filters validated against what ``user`` may see."""
    accounts = report_accounts(user, subscription, include_sub_accounts=include_sub_accounts)
    whole_subscriptions = all(account.administered for account in accounts)
    filterset = UsageFilterSet(
        filters or {}, user=user, accounts=accounts, whole_subscriptions=whole_subscriptions
    )
    if not filterset.is_valid():
        raise InvalidFilter(**{name: list(errors) for name, errors in filterset.errors.items()})
    return UsageQuery(
        principal=user,
        accounts=accounts,
        timeframe=timeframe,
        filterset=filterset,
        whole_subscriptions=whole_subscriptions,
    )


def report_accounts(user, subscription, *, include_sub_accounts: bool) -> list[Subscription]:
    """The subscription first, then the sub-accounts ``user`` sees if asked, each with
    ``administered`` and ``currency``: no query for the subscription alone from
    ``report_subscription``."""
    if not include_sub_accounts and hasattr(subscription, "currency"):
        return [subscription]
    accounts = Q(pk=subscription.pk)
    if include_sub_accounts:
        accounts |= Q(parent=subscription)
    found = with_currency(Subscription.objects.visible_to(user).filter(accounts), user)
    return sorted(found, key=lambda account: account.pk != subscription.pk)


def during(accounts: list[Subscription], timeframe: Timeframe, instant_field: str) -> Q:
    """The timeframe's local days in each account's own time zone."""
    condition = Q()
    for account in accounts:
        bounds = timeframe.bounds_in(account.zone)
        condition |= Q(
            subscription=account,
            **{f"{instant_field}__gte": bounds.start, f"{instant_field}__lt": bounds.end},
        )
    return condition
