"""Everything derived from the ledger: daily rollups and period counters.

``add_to_rollups`` keeps the rollups in step as the recording service writes events, in the
same transaction. ``rebuild_rollups`` recomputes rollups and counters from the ledger alone:
it is the reference the tests compare against and the repair tool when the two ever disagree.

The ledger is streamed with a server-side cursor and summed in Python rather than with SQL
``SUM``: local days need the subscription's ``zoneinfo`` (DST included), and SQLite would sum
decimals as floats.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction

from accounts.models import Subscription, TeamMembership

from .models import BillingPeriod, CreditEvent, DailyUsage, TeamPeriodUsage, UserPeriodUsage
from .periods import local_date

LEDGER_CHUNK_SIZE = 5000
INSERT_BATCH_SIZE = 2000

DIMENSIONS = (
    "environment_id",
    "user_id",
    "api_key_id",
    "product_id",
    "agent_id",
    "model",
    "feature",
)
LEDGER_FIELDS = (
    "timestamp",
    "period_id",
    *DIMENSIONS,
    "kind",
    "status",
    "credits",
    "excess_credits",
    "input_tokens",
    "output_tokens",
    "latency_ms",
)


@dataclass
class DayTotals:
    """Running sums for one ``DailyUsage`` row."""

    period_id: int
    credits: Decimal = Decimal(0)
    excess_credits: Decimal = Decimal(0)
    runs: int = 0
    failed_runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms_total: int = 0
    latency_samples: int = 0
    last_event_at: datetime | None = None


@dataclass
class LedgerTotals:
    days: dict[tuple, DayTotals]
    period_credits: dict[int, Decimal]
    period_excess: dict[int, Decimal]
    user_credits: dict[tuple[int, int], Decimal]


def rebuild_rollups(*, subscription: Subscription) -> None:
    """Recompute the subscription's ``DailyUsage`` rows and period counters from its ledger.

    The subscription's periods are locked first: the recording service charges a period row
    before it writes a ledger row, so no event can commit into them while the rebuild reads
    the ledger. (A period opened after the lock is not covered; the beat task opens each
    period before its first event in normal operation.)
    """
    with transaction.atomic():
        periods = list(BillingPeriod.objects.select_for_update().filter(subscription=subscription))
        totals = _sum_ledger(subscription)
        _replace_daily_usage(subscription, totals.days)
        _set_period_counters(periods, totals)
        _replace_user_and_team_usage(subscription, periods, totals.user_credits)


def _sum_ledger(subscription: Subscription) -> LedgerTotals:
    zone = subscription.zone
    totals = LedgerTotals(
        days={},
        period_credits=defaultdict(Decimal),
        period_excess=defaultdict(Decimal),
        user_credits=defaultdict(Decimal),
    )
    rows = (
        CreditEvent.objects.filter(subscription=subscription)
        .order_by()
        .values_list(*LEDGER_FIELDS, named=True)
        .iterator(chunk_size=LEDGER_CHUNK_SIZE)
    )
    for row in rows:
        key = (local_date(row.timestamp, zone), *_dimensions(row))
        day = totals.days.get(key)
        if day is None:
            day = totals.days[key] = DayTotals(period_id=row.period_id)
        _add_event(day, row)
        totals.period_credits[row.period_id] += row.credits
        totals.period_excess[row.period_id] += row.excess_credits
        if row.user_id is not None:
            totals.user_credits[row.period_id, row.user_id] += row.credits
    return totals


def _add_event(day: DayTotals, row) -> None:
    day.credits += row.credits
    day.excess_credits += row.excess_credits
    day.input_tokens += row.input_tokens
    day.output_tokens += row.output_tokens
    if row.kind == CreditEvent.Kind.USAGE:
        day.runs += 1
        if row.status == CreditEvent.Status.FAILED:
            day.failed_runs += 1
    if row.latency_ms is not None:
        day.latency_ms_total += row.latency_ms
        day.latency_samples += 1
    if day.last_event_at is None or row.timestamp > day.last_event_at:
        day.last_event_at = row.timestamp


def _replace_daily_usage(subscription: Subscription, days: dict[tuple, DayTotals]) -> None:
    DailyUsage.objects.filter(subscription=subscription).delete()
    DailyUsage.objects.bulk_create(
        (_daily_usage_row(subscription, key, totals) for key, totals in days.items()),
        batch_size=INSERT_BATCH_SIZE,
    )


def _daily_usage_row(subscription: Subscription, key: tuple, totals: DayTotals) -> DailyUsage:
    day, *dimension_values = key
    return DailyUsage(
        subscription=subscription,
        day=day,
        **dict(zip(DIMENSIONS, dimension_values, strict=True)),
        **vars(totals),
    )


def _set_period_counters(periods: list[BillingPeriod], totals: LedgerTotals) -> None:
    for period in periods:
        period.credits_used = totals.period_credits.get(period.pk, Decimal(0))
        period.excess_used = totals.period_excess.get(period.pk, Decimal(0))
    BillingPeriod.objects.bulk_update(periods, ["credits_used", "excess_used"])


def _replace_user_and_team_usage(
    subscription: Subscription,
    periods: list[BillingPeriod],
    user_credits: dict[tuple[int, int], Decimal],
) -> None:
    UserPeriodUsage.objects.filter(period__in=periods).delete()
    TeamPeriodUsage.objects.filter(period__in=periods).delete()

    team_of_user = dict(
        TeamMembership.objects.filter(subscription=subscription).values_list("user_id", "team_id")
    )
    team_credits: dict[tuple[int, int], Decimal] = defaultdict(Decimal)
    for (period_id, user_id), credits in user_credits.items():
        if user_id in team_of_user:
            team_credits[period_id, team_of_user[user_id]] += credits

    UserPeriodUsage.objects.bulk_create(
        (
            UserPeriodUsage(period_id=period_id, user_id=user_id, credits_used=credits)
            for (period_id, user_id), credits in user_credits.items()
        ),
        batch_size=INSERT_BATCH_SIZE,
    )
    TeamPeriodUsage.objects.bulk_create(
        (
            TeamPeriodUsage(period_id=period_id, team_id=team_id, credits_used=credits)
            for (period_id, team_id), credits in team_credits.items()
        ),
        batch_size=INSERT_BATCH_SIZE,
    )


# --- Keeping rollups in step with new events -------------------------------------------------

_ROLLUP_KEY = (
    "subscription_id, day, COALESCE(environment_id, 0), COALESCE(user_id, 0), "
    "COALESCE(api_key_id, ''), COALESCE(product_id, 0), COALESCE(agent_id, 0), model, feature"
)
_SUMS = tuple(
    name for name in DayTotals.__dataclass_fields__ if name not in ("period_id", "last_event_at")
)
_COLUMNS = ("subscription_id", "day", *DIMENSIONS, "period_id", *_SUMS, "last_event_at")


def add_to_rollups(events: list[CreditEvent], *, zone) -> None:
    """Upsert new events into their days' rollup rows: one statement for the whole list.

    Events that share a row are summed first (an upsert may touch a row only once), and rows
    are written in key order so that concurrent writers lock them in the same order.
    """
    days: dict[tuple, DayTotals] = {}
    for event in events:
        key = (event.subscription_id, local_date(event.timestamp, zone), *_dimensions(event))
        if key not in days:
            days[key] = DayTotals(period_id=event.period_id)
        _add_event(days[key], event)
    if not days:
        return
    rows = []
    for key in sorted(days, key=_sort_key):
        totals = days[key]
        rows.append(
            (*key, totals.period_id, *(getattr(totals, n) for n in _SUMS), totals.last_event_at)
        )
    table = DailyUsage._meta.db_table
    row_placeholder = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    sums = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in _SUMS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(_COLUMNS)}) "  # noqa: S608
            f"VALUES {', '.join([row_placeholder] * len(rows))} "
            f"ON CONFLICT ({_ROLLUP_KEY}) DO UPDATE SET {sums}, "
            f"last_event_at = CASE WHEN EXCLUDED.last_event_at > {table}.last_event_at "
            f"THEN EXCLUDED.last_event_at ELSE {table}.last_event_at END",
            [value for row in rows for value in row],
        )


def _dimensions(row) -> tuple:
    return tuple(getattr(row, name) for name in DIMENSIONS)


def _sort_key(key: tuple) -> tuple:
    """Order rollup keys with NULL dimensions first, as comparable tuples."""
    return tuple((value is not None, value if value is not None else 0) for value in key)
