"""Everything derived from the ledger: rollups and period counters.

``add_to_rollups`` keeps the rollups in step as the recording service writes events, in the
same transaction. ``rebuild_rollups`` recomputes rollups and counters from the ledger alone:
it is the reference the tests compare against and the repair tool when the two ever disagree.

The rollups, and who reads them:

* ``DailyUsage``: every dimension (environment, user, API key, product, agent, model,
  feature) per local day. A project manager's and a member's pages read it, and it is the
  reports' fallback for any combination of dimensions that no narrower rollup holds.
* Narrow rollups, keyed by fewer dimensions, with a row per local day and one per local month
  (``grain``), so that twelve months read about twelve rows per key, not 365:
  ``ModelRollup`` (model), ``AgentRollup`` (agent), ``ProductRollup`` (product, feature),
  ``PersonRollup`` (environment, user, API key; and the latest event) and
  ``SubscriptionRollup`` (product, feature, agent, model). ``narrowest_rollup`` picks the one
  a report reads; the admin's dashboard reads ``ProductRollup`` and every member table
  ``PersonRollup``. Only ``PersonRollup`` holds environment and user, which scoping needs
  for anyone who sees less than whole subscriptions; the others are for admins.
* ``AgentRollup`` and ``ModelRollup`` also keep a latency histogram (runs per logarithmic
  bucket, ``LATENCY_BUCKETS``): their 95th percentile within 1% (``latency_percentile``).
* ``AgentRollup.sessions`` counts each session once per local day on which it ran with the
  agent; ``AgentSessionDay`` holds the (day, agent, session) claims that make that exact under
  concurrent writers. A session that runs on several local days counts once on each. Claims
  of closed days are pruned (``credits.pruning``); ``rebuild_rollups`` derives them again.

Rows on the benchmark's data, for its busiest subscription (400 people, 60 agents, 12 models,
a year of events over 13 local months) with 1M events loaded (528,708 of them in its ledger)
and with 10M (1,693,472): ``DailyUsage`` 203,980 and 953,002 rows; the narrow rollups'
monthly rows: ``ProductRollup`` 104 and 104, ``ModelRollup`` 156 and 156, ``AgentRollup``
792 and 793, ``PersonRollup`` 5,759 and 5,226, ``SubscriptionRollup`` 15,010 and 33,120
(``ProductRollup`` keeps 8 daily rows a day at 10M). The latency histograms fill up
with volume (about 58 buckets per agent and month at 1M, 122 at 10M), to at most a few
hundred.

The ledger is streamed with a server-side cursor and summed in Python rather than with SQL
``SUM``: local days need the subscription's ``zoneinfo`` (DST included).
"""

import json
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import connection, models, transaction

from accounts.models import Subscription, TeamMembership

from .models import (
    AgentRollup,
    AgentSessionDay,
    BillingPeriod,
    CreditEvent,
    DailyUsage,
    ModelRollup,
    PersonRollup,
    ProductRollup,
    RollupGrain,
    SubscriptionRollup,
    TeamPeriodUsage,
    UserPeriodUsage,
)
from .periods import local_date, month_start, next_month_start

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
    "subscription_id",
    "period_id",
    *DIMENSIONS,
    "kind",
    "status",
    "credits",
    "excess_credits",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "session_id",
)
DAY, MONTH = RollupGrain.DAY.value, RollupGrain.MONTH.value


# --- Latency buckets -------------------------------------------------------------------------

LATENCY_RELATIVE_ERROR = Decimal("0.01")
LATENCY_MAX_MS = 2**31 - 1  # PositiveIntegerField


def _latency_bucket_bounds() -> tuple[int, ...]:
    """The lowest latency (ms) of each bucket: 0, then the integers in (g^(k-1), g^k] for
    g = 101/99, k = 0, 1, ... (empty ranges skipped).

    A bucket's highest latency is below g times its lowest, so every latency in it is within
    (g - 1) / (g + 1) = 1% of the bucket's value (``latency_bucket_value``). Below about 50 ms
    each bucket is one integer, hence exact. Integer arithmetic, so that Python and SQL
    (``width_bucket``) put a latency in the same bucket on every machine.
    """
    bounds = [0]
    numerator, denominator = 1, 1  # g^k = numerator / denominator, starting at k = 0
    previous_floor = 0  # floor(g^-1)
    while True:
        floor = numerator // denominator
        lowest = previous_floor + 1
        if lowest > LATENCY_MAX_MS:
            return tuple(bounds)
        if floor >= lowest:
            bounds.append(lowest)
        previous_floor = floor
        numerator, denominator = numerator * 101, denominator * 99


LATENCY_BUCKETS = _latency_bucket_bounds()


def latency_bucket(latency_ms: int) -> int:
    """The bucket of a latency (its index in ``LATENCY_BUCKETS``)."""
    return bisect_right(LATENCY_BUCKETS, latency_ms) - 1


def latency_bucket_value(bucket: int) -> Decimal:
    """The value that stands for a bucket's latencies: 2ab / (a + b) for the bucket's lowest
    and highest latencies a and b, which is within 1% of each of them."""
    lowest = LATENCY_BUCKETS[bucket]
    last = bucket + 1 == len(LATENCY_BUCKETS)
    highest = LATENCY_MAX_MS if last else LATENCY_BUCKETS[bucket + 1] - 1
    if lowest == highest:
        return Decimal(lowest)
    return Decimal(2 * lowest * highest) / Decimal(lowest + highest)


def latency_percentile(runs_per_bucket: dict[int, int], fraction: Decimal) -> Decimal | None:
    """``percentile_cont(fraction)`` of the latencies a histogram counts, within 1%.

    Like PostgreSQL's, it interpolates between the values at ranks floor(p) and ceil(p),
    p = fraction * (n - 1); each of those is read as its bucket's value, within 1% of the
    true latency, and so is any mix of the two.
    """
    total = sum(runs_per_bucket.values())
    if not total:
        return None
    position = fraction * (total - 1)
    lower_rank = int(position)
    upper_rank = min(lower_rank + 1, total - 1)
    lower = upper = None
    seen = 0  # runs in the buckets so far: ranks 0 to seen - 1
    for bucket in sorted(runs_per_bucket):
        seen += runs_per_bucket[bucket]
        if lower is None and lower_rank < seen:
            lower = latency_bucket_value(bucket)
        if upper_rank < seen:
            upper = latency_bucket_value(bucket)
            break
    return lower + (upper - lower) * (position - lower_rank)


# --- Which rollup a report reads -------------------------------------------------------------


@dataclass(frozen=True)
class Rollup:
    """A rollup as the reports see it: the dimensions it is keyed by (besides subscription and
    day), whether it has monthly rows, a latency histogram and session counts."""

    model: type[models.Model]
    dimensions: frozenset[str]
    monthly: bool = True
    latency: bool = False
    sessions: bool = False


ALL_DIMENSIONS = frozenset(name.removesuffix("_id") for name in DIMENSIONS)
# Scoping (``UsageQuerySet.visible_to``) reads these for anyone who does not administer the
# whole subscriptions being read.
SCOPING_DIMENSIONS = frozenset({"environment", "user"})
# Narrowest first: fewest rows per subscription and month on the benchmark's data.
ROLLUPS = (
    Rollup(ModelRollup, frozenset({"model"}), latency=True),
    Rollup(AgentRollup, frozenset({"agent"}), latency=True, sessions=True),
    Rollup(ProductRollup, frozenset({"product", "feature"})),
    Rollup(PersonRollup, frozenset({"environment", "user", "api_key"})),
    Rollup(SubscriptionRollup, frozenset({"product", "feature", "agent", "model"})),
    Rollup(DailyUsage, ALL_DIMENSIONS, monthly=False),
)


def narrowest_rollup(dimensions, *, whole_subscriptions: bool) -> Rollup:
    """The smallest rollup keyed by every one of ``dimensions`` (the ones a report groups or
    filters by) and, unless the reader administers whole subscriptions, by the ones scoping
    needs. ``DailyUsage`` holds them all."""
    needed = frozenset(dimensions) | (frozenset() if whole_subscriptions else SCOPING_DIMENSIONS)
    if not needed <= ALL_DIMENSIONS:
        raise ValueError(f"No rollup has {sorted(needed - ALL_DIMENSIONS)}.")
    return next(rollup for rollup in ROLLUPS if needed <= rollup.dimensions)


def covering(
    rollup: Rollup, first_day: date, last_day: date, *, month_ends_there: bool = False
) -> models.Q:
    """The rows of ``rollup`` that add up to the local days ``first_day`` to ``last_day``:
    whole local months from the monthly rows, the days around them from the daily rows.

    ``month_ends_there``: the month of ``last_day`` has no rows after it (``recorded_after``
    said so; the usual case when ``last_day`` is today), so its monthly row adds up to its
    days through ``last_day`` and is read instead of them.
    """
    if not rollup.monthly:
        return models.Q(day__gte=first_day, day__lte=last_day)
    first_month = first_day if first_day.day == 1 else next_month_start(first_day)
    # After the last month read whole.
    if month_ends_there:
        after_last_month = next_month_start(last_day)
    else:
        after_last_month = month_start(last_day + timedelta(days=1))
    if first_month >= after_last_month:
        return models.Q(grain=DAY, day__gte=first_day, day__lte=last_day)
    rows = models.Q(grain=MONTH, day__gte=first_month, day__lt=after_last_month)
    if first_day < first_month:
        rows |= models.Q(grain=DAY, day__gte=first_day, day__lt=first_month)
    if after_last_month <= last_day:
        rows |= models.Q(grain=DAY, day__gte=after_last_month, day__lte=last_day)
    return rows


def recorded_after(rollup: Rollup, subscriptions, last_day: date) -> bool:
    """Whether any of ``subscriptions`` has a daily row of ``rollup`` after ``last_day`` in
    the same month: a timeframe that ends before its month does, or an event dated ahead.
    One probe of the rollup's unique index; it decides which rows a report reads (see
    ``covering``), never what anyone sees, so it needs no scoping."""
    return (
        rollup.model.objects.filter(
            subscription__in=subscriptions,
            grain=DAY,
            day__gt=last_day,
            day__lt=next_month_start(last_day),
        )
        .order_by()
        .exists()
    )


# --- What ledger rows add to each rollup -----------------------------------------------------


@dataclass
class Sums:
    """Running sums of the columns every rollup adds up."""

    credits: Decimal = Decimal(0)
    excess_credits: Decimal = Decimal(0)
    runs: int = 0
    failed_runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms_total: int = 0
    latency_samples: int = 0

    def add(self, row) -> None:
        self.credits += row.credits
        self.excess_credits += row.excess_credits
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        if row.kind == CreditEvent.Kind.USAGE:
            self.runs += 1
            if row.status == CreditEvent.Status.FAILED:
                self.failed_runs += 1
        if row.latency_ms is not None:
            self.latency_ms_total += row.latency_ms
            self.latency_samples += 1


SUMS = tuple(spec.name for spec in fields(Sums))


@dataclass
class LatestTotals(Sums):
    """Running sums and the latest event's time, for a rollup that keeps it."""

    last_event_at: datetime | None = None

    def add(self, row) -> None:
        super().add(row)
        if self.last_event_at is None or row.timestamp > self.last_event_at:
            self.last_event_at = row.timestamp


@dataclass
class DayTotals(LatestTotals):
    """Running sums for one ``DailyUsage`` row."""

    period_id: int = 0


@dataclass
class TimedTotals(Sums):
    """Running sums and the latency histogram (bucket -> runs) for one row of a rollup that
    keeps one."""

    latency_histogram: Counter = field(default_factory=Counter)

    def add(self, row) -> None:
        super().add(row)
        if row.kind == CreditEvent.Kind.USAGE and row.latency_ms is not None:
            self.latency_histogram[latency_bucket(row.latency_ms)] += 1


@dataclass
class AgentTotals(TimedTotals):
    """Running sums for one ``AgentRollup`` row; its sessions are counted from the claims."""

    session_runs: int = 0

    def add(self, row) -> None:
        super().add(row)
        if _in_session(row):
            self.session_runs += 1


def histogram_object(histogram: Counter) -> dict[str, int]:
    """A histogram as the rollups store it: ``{"bucket": runs}``, buckets in order."""
    return {str(bucket): histogram[bucket] for bucket in sorted(histogram)}


def _in_session(row) -> bool:
    return row.kind == CreditEvent.Kind.USAGE and bool(row.session_id)


@dataclass
class Derived:
    """What some ledger rows add to every rollup, summed per rollup row.

    Keys: ``daily`` (subscription, day, *DIMENSIONS) for ``DailyUsage``; the narrow rollups
    (subscription, grain, day, *their dimensions); ``sessions`` the (subscription, day, agent,
    session) claims.
    """

    daily: dict[tuple, DayTotals] = field(default_factory=dict)
    person: dict[tuple, LatestTotals] = field(default_factory=dict)
    product: dict[tuple, Sums] = field(default_factory=dict)
    agent: dict[tuple, AgentTotals] = field(default_factory=dict)
    model: dict[tuple, TimedTotals] = field(default_factory=dict)
    subscription: dict[tuple, Sums] = field(default_factory=dict)
    sessions: set[tuple] = field(default_factory=set)

    def add(self, row, day: date) -> None:
        subscription = row.subscription_id
        key = (subscription, day, *(getattr(row, name) for name in DIMENSIONS))
        totals = self.daily.get(key)
        if totals is None:
            totals = self.daily[key] = DayTotals(period_id=row.period_id)
        totals.add(row)
        for grain, start in ((DAY, day), (MONTH, month_start(day))):
            at = (subscription, grain, start)
            _totals(
                self.person, (*at, row.environment_id, row.user_id, row.api_key_id), LatestTotals
            ).add(row)
            _totals(self.product, (*at, row.product_id, row.feature)).add(row)
            _totals(self.agent, (*at, row.agent_id), AgentTotals).add(row)
            _totals(self.model, (*at, row.model), TimedTotals).add(row)
            _totals(
                self.subscription, (*at, row.product_id, row.agent_id, row.model, row.feature)
            ).add(row)
        if _in_session(row):
            self.sessions.add((subscription, day, row.agent_id, row.session_id))

    @property
    def days(self) -> dict[tuple, DayTotals]:
        """``DailyUsage`` rows of one subscription keyed by (day, *DIMENSIONS)."""
        return {key[1:]: totals for key, totals in self.daily.items()}


def _totals(rows: dict, key: tuple, kind: type = Sums):
    totals = rows.get(key)
    if totals is None:
        totals = rows[key] = kind()
    return totals


def sessions_per_row(claims) -> Counter:
    """(subscription, grain, day, agent) -> sessions, from (subscription, day, agent, session)
    claims: once per local day, and the month's row adds up its days."""
    counts = Counter()
    for subscription, day, agent, _ in claims:
        counts[subscription, DAY, day, agent] += 1
        counts[subscription, MONTH, month_start(day), agent] += 1
    return counts


# --- Rebuilding from the ledger --------------------------------------------------------------


@dataclass
class LedgerTotals:
    derived: Derived
    period_credits: dict[int, Decimal]
    period_excess: dict[int, Decimal]
    user_credits: dict[tuple[int, int], Decimal]

    @property
    def days(self) -> dict[tuple, DayTotals]:
        """``DailyUsage`` rows keyed by (day, *DIMENSIONS)."""
        return self.derived.days


def rebuild_rollups(*, subscription: Subscription) -> None:
    """Recompute the subscription's rollups and period counters from its ledger.

    The subscription's periods are locked first: the recording service charges a period row
    before it writes a ledger row, so no event can commit into them while the rebuild reads
    the ledger. (A period opened after the lock is not covered; the beat task opens each
    period before its first event in normal operation.)
    """
    with transaction.atomic():
        periods = list(BillingPeriod.objects.select_for_update().filter(subscription=subscription))
        totals = _sum_ledger(subscription)
        _replace_rollups(subscription, totals.derived)
        _set_period_counters(periods, totals)
        _replace_user_and_team_usage(subscription, periods, totals.user_credits)


def _sum_ledger(subscription: Subscription) -> LedgerTotals:
    zone = subscription.zone
    totals = LedgerTotals(
        derived=Derived(),
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
        totals.derived.add(row, local_date(row.timestamp, zone))
        totals.period_credits[row.period_id] += row.credits
        totals.period_excess[row.period_id] += row.excess_credits
        if row.user_id is not None:
            totals.user_credits[row.period_id, row.user_id] += row.credits
    return totals


def _replace_rollups(subscription: Subscription, derived: Derived) -> None:
    for table in (_DAILY, *_NARROW, _SESSIONS):
        table.model.objects.filter(subscription=subscription).delete()
    sessions = sessions_per_row(derived.sessions)
    rows = {
        _DAILY: (
            DailyUsage(
                subscription_id=key[0],
                day=key[1],
                **dict(zip(DIMENSIONS, key[2:], strict=True)),
                **vars(totals),
            )
            for key, totals in derived.daily.items()
        ),
        _PERSON: (
            _narrow_row(_PERSON, key, vars(totals)) for key, totals in derived.person.items()
        ),
        _AGENT: (
            _narrow_row(_AGENT, key, {**vars(totals), "sessions": sessions[key]})
            for key, totals in derived.agent.items()
        ),
        _MODEL: (_narrow_row(_MODEL, key, vars(totals)) for key, totals in derived.model.items()),
        _PRODUCT: (
            _narrow_row(_PRODUCT, key, vars(totals)) for key, totals in derived.product.items()
        ),
        _SUBSCRIPTION: (
            _narrow_row(_SUBSCRIPTION, key, vars(totals))
            for key, totals in derived.subscription.items()
        ),
        _SESSIONS: (
            AgentSessionDay(subscription_id=s, day=day, agent_id=agent, session_id=session)
            for s, day, agent, session in derived.sessions
        ),
    }
    for table, objects in rows.items():
        table.model.objects.bulk_create(objects, batch_size=INSERT_BATCH_SIZE)


def _narrow_row(table: "_Table", key: tuple, values: dict):
    if "latency_histogram" in values:
        values = {**values, "latency_histogram": histogram_object(values["latency_histogram"])}
    return table.model(**dict(zip(table.key, key, strict=True)), **values)


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
            UserPeriodUsage(
                subscription=subscription,
                period_id=period_id,
                user_id=user_id,
                credits_used=credits,
            )
            for (period_id, user_id), credits in user_credits.items()
        ),
        batch_size=INSERT_BATCH_SIZE,
    )
    TeamPeriodUsage.objects.bulk_create(
        (
            TeamPeriodUsage(
                subscription=subscription,
                period_id=period_id,
                team_id=team_id,
                credits_used=credits,
            )
            for (period_id, team_id), credits in team_credits.items()
        ),
        batch_size=INSERT_BATCH_SIZE,
    )


# --- Deriving the narrow rollups in bulk (PostgreSQL) -----------------------------------------


def derive_narrow_rollups(cursor, subscription_ids: list[int], model_names=None) -> None:
    """Build the narrow rollups (and for ``AgentRollup`` and ``ModelRollup`` their latency
    histograms and the session claims) of these subscriptions with set-based SQL
    (PostgreSQL), from their ``DailyUsage`` rows and ledger: for bulk loads (the benchmark's
    generator) and the migrations that add these tables. ``model_names`` names the rollups
    to build (as a migration knows them; default every one). The subscriptions must
    have none of their rows yet, and ``DailyUsage`` must be in step with the ledger. Runs
    inside the caller's transaction (it may use a temporary table dropped at commit).

    ``cursor`` is a DB-API cursor (Django's or psycopg's) taking ``%(name)s`` parameters.
    """
    tables = [
        table for table in _NARROW if model_names is None or table.model.__name__ in model_names
    ]
    for statement in _derive_statements(tables):
        cursor.execute(
            statement, {"subscriptions": list(subscription_ids), "bounds": list(LATENCY_BUCKETS)}
        )


def _aggregate(column: str, alias: str = "") -> str:
    """How a rollup column adds up over rows: the latest time, or the sum."""
    function = "MAX" if column == "last_event_at" else "SUM"
    return f"{function}({alias}{column}) AS {column}"


def _derive_statements(tables: list["_Table"]) -> list[str]:
    """Daily rows from ``DailyUsage`` (keyed by every dimension, so it adds up to any of
    them), with what it does not keep (latency buckets, sessions) from one pass over the
    ledger into a temporary table of runs per (day, agent, model, bucket, in a session) and
    one pass for the session claims; then the monthly rows from the daily ones."""
    runs = "narrow_rollup_runs"
    statements = []
    if _AGENT in tables or _MODEL in tables:
        statements += [
            f"DROP TABLE IF EXISTS pg_temp.{runs}",
            f"CREATE TEMPORARY TABLE {runs} ON COMMIT DROP AS "  # noqa: S608
            "SELECT e.subscription_id, (e.timestamp AT TIME ZONE s.timezone)::date AS day, "
            "e.agent_id, e.model, "
            "width_bucket(e.latency_ms, %(bounds)s::integer[]) - 1 AS bucket, "
            "e.session_id <> '' AS in_session, COUNT(*) AS runs "
            "FROM credits_creditevent e JOIN accounts_subscription s ON s.id = e.subscription_id "
            "WHERE e.subscription_id = ANY(%(subscriptions)s) AND e.kind = 'usage' "
            "GROUP BY 1, 2, 3, 4, 5, 6",
            # Temporary tables get no statistics of their own: without them the joins below
            # were planned for a few rows.
            f"ANALYZE pg_temp.{runs}",
        ]
    if _AGENT in tables:
        statements.append(
            f"INSERT INTO {_SESSIONS.table} ({', '.join(_SESSIONS.columns)}) "  # noqa: S608
            "SELECT DISTINCT e.subscription_id, (e.timestamp AT TIME ZONE s.timezone)::date, "
            "e.agent_id, e.session_id "
            "FROM credits_creditevent e JOIN accounts_subscription s ON s.id = e.subscription_id "
            "WHERE e.subscription_id = ANY(%(subscriptions)s) AND e.kind = 'usage' "
            "AND e.session_id <> ''"
        )
    for table in tables:
        dimensions = table.key[3:]
        listed = ", ".join(dimensions)
        own = [c for c in table.sums if c in _DAILY.sums]  # what DailyUsage keeps too
        selected = ["d.subscription_id", f"'{DAY}'", "d.day", *(f"d.{c}" for c in dimensions)]
        selected += [f"d.{c}" for c in own]
        joins = ""
        if table is _AGENT:
            selected += ["COALESCE(x.session_runs, 0)", "COALESCE(c.sessions, 0)"]
            joins += (
                " LEFT JOIN (SELECT subscription_id, day, agent_id, "  # noqa: S608
                f"SUM(runs) AS session_runs FROM {runs} WHERE in_session GROUP BY 1, 2, 3) x "
                f"ON {_same(('subscription_id', 'day', 'agent_id'), 'x', 'd')}"
                " LEFT JOIN (SELECT subscription_id, day, agent_id, COUNT(*) AS sessions "
                f"FROM {_SESSIONS.table} WHERE subscription_id = ANY(%(subscriptions)s) "
                "GROUP BY 1, 2, 3) c "
                f"ON {_same(('subscription_id', 'day', 'agent_id'), 'c', 'd')}"
            )
        if table.latency:
            (dimension,) = dimensions
            selected.append("COALESCE(h.histogram, '{}'::jsonb)")
            joins += (
                f" LEFT JOIN (SELECT subscription_id, day, {dimension}, "  # noqa: S608
                "jsonb_object_agg(bucket, runs) AS histogram FROM ("
                f"SELECT subscription_id, day, {dimension}, bucket, SUM(runs) AS runs "
                f"FROM {runs} WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4) b "
                f"GROUP BY 1, 2, 3) h ON {_same(('subscription_id', 'day', dimension), 'h', 'd')}"
            )
        statements.append(
            f"INSERT INTO {table.table} ({', '.join(table.columns)}) "  # noqa: S608
            f"SELECT {', '.join(selected)} FROM (SELECT subscription_id, day, {listed}, "
            f"{', '.join(_aggregate(c) for c in own)} FROM {DailyUsage._meta.db_table} "
            f"WHERE subscription_id = ANY(%(subscriptions)s) "
            f"GROUP BY subscription_id, day, {listed}) d{joins}"
        )
    month = "date_trunc('month', t.day)::date"
    days = f"t.grain = '{DAY}' AND t.subscription_id = ANY(%(subscriptions)s)"
    for table in tables:
        dimensions = table.key[3:]
        listed = ", ".join(f"t.{c}" for c in dimensions)
        selected = ["m.subscription_id", f"'{MONTH}'", "m.day", *(f"m.{c}" for c in dimensions)]
        selected += [f"m.{c}" for c in table.sums]
        joins = ""
        if table.latency:
            selected.append("COALESCE(h.histogram, '{}'::jsonb)")
            joins = (
                f" LEFT JOIN (SELECT subscription_id, day, {dimensions[0]}, "  # noqa: S608
                "jsonb_object_agg(bucket, runs) AS histogram FROM ("
                f"SELECT t.subscription_id, {month} AS day, {listed}, b.key AS bucket, "
                "SUM(b.value::bigint) AS runs "
                f"FROM {table.table} t, jsonb_each_text(t.latency_histogram) b WHERE {days} "
                "GROUP BY 1, 2, 3, 4) x GROUP BY 1, 2, 3) h "
                f"ON {_same(('subscription_id', 'day', dimensions[0]), 'h', 'm')}"
            )
        statements.append(
            f"INSERT INTO {table.table} ({', '.join(table.columns)}) "  # noqa: S608
            f"SELECT {', '.join(selected)} FROM (SELECT t.subscription_id, {month} AS day, "
            f"{listed}, {', '.join(_aggregate(c, 't.') for c in table.sums)} "
            f"FROM {table.table} t WHERE {days} "
            f"GROUP BY t.subscription_id, {month}, {listed}) m{joins}"
        )
    return statements


def _same(columns: tuple[str, ...], left: str, right: str) -> str:
    """Equal columns, a missing foreign key matching a missing one (hashable, unlike ``IS NOT
    DISTINCT FROM``)."""
    return " AND ".join(
        f"COALESCE({left}.{c}, 0) = COALESCE({right}.{c}, 0)"
        if c.endswith("_id") and c != "subscription_id"
        else f"{left}.{c} = {right}.{c}"
        for c in columns
    )


# --- Keeping rollups in step with new events -------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """How ``add_to_rollups`` upserts into one rollup table."""

    model: type[models.Model]
    key: tuple[str, ...]  # columns, in the order of the row keys of ``Derived``
    conflict: str  # the unique index's expressions
    sums: tuple[str, ...]  # columns that add up on conflict
    kept: tuple[str, ...] = ()  # columns written on insert only
    latency: bool = False  # a latency histogram, merged on conflict (the last column)

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def columns(self) -> tuple[str, ...]:
        return (
            *self.key,
            *self.kept,
            *self.sums,
            *(("latency_histogram",) if self.latency else ()),
        )


_NARROW_KEY = ("subscription_id", "grain", "day")
_DAILY = _Table(
    DailyUsage,
    key=("subscription_id", "day", *DIMENSIONS),
    conflict=(
        "subscription_id, day, COALESCE(environment_id, 0), COALESCE(user_id, 0), "
        "COALESCE(api_key_id, ''), COALESCE(product_id, 0), COALESCE(agent_id, 0), model, feature"
    ),
    kept=("period_id",),
    sums=(*SUMS, "last_event_at"),
)
_PERSON = _Table(
    PersonRollup,
    key=(*_NARROW_KEY, "environment_id", "user_id", "api_key_id"),
    conflict=(
        "subscription_id, grain, day, COALESCE(environment_id, 0), COALESCE(user_id, 0), "
        "COALESCE(api_key_id, '')"
    ),
    sums=(*SUMS, "last_event_at"),
)
_AGENT = _Table(
    AgentRollup,
    key=(*_NARROW_KEY, "agent_id"),
    conflict="subscription_id, grain, day, COALESCE(agent_id, 0)",
    sums=(*SUMS, "session_runs", "sessions"),
    latency=True,
)
_MODEL = _Table(
    ModelRollup,
    key=(*_NARROW_KEY, "model"),
    conflict="subscription_id, grain, day, model",
    sums=SUMS,
    latency=True,
)
_SUBSCRIPTION = _Table(
    SubscriptionRollup,
    key=(*_NARROW_KEY, "product_id", "agent_id", "model", "feature"),
    conflict=(
        "subscription_id, grain, day, COALESCE(product_id, 0), COALESCE(agent_id, 0), model, "
        "feature"
    ),
    sums=SUMS,
)
_PRODUCT = _Table(
    ProductRollup,
    key=(*_NARROW_KEY, "product_id", "feature"),
    conflict="subscription_id, grain, day, COALESCE(product_id, 0), feature",
    sums=SUMS,
)
_NARROW = (_PERSON, _AGENT, _MODEL, _PRODUCT, _SUBSCRIPTION)
_SESSIONS = _Table(
    AgentSessionDay,
    key=("subscription_id", "day", "agent_id", "session_id"),
    conflict="subscription_id, day, COALESCE(agent_id, 0), session_id",
    sums=(),
)
# The tables ``derive_narrow_rollups`` writes, for bulk loads that prepare them.
NARROW_ROLLUP_TABLES = tuple(table.table for table in (*_NARROW, _SESSIONS))
# PostgreSQL array types of the columns, for ``unnest``.
_TYPES = {
    "subscription_id": "bigint",
    "period_id": "bigint",
    "environment_id": "bigint",
    "user_id": "bigint",
    "api_key_id": "varchar",
    "product_id": "bigint",
    "agent_id": "bigint",
    "model": "varchar",
    "feature": "varchar",
    "grain": "varchar",
    "day": "date",
    "latency_histogram": "jsonb",
    "session_id": "varchar",
    "credits": "numeric",
    "excess_credits": "numeric",
    "last_event_at": "timestamptz",
    "input_tokens": "bigint",
    "output_tokens": "bigint",
    "latency_ms_total": "bigint",
}  # anything else: integer


def add_to_rollups(events: list[CreditEvent], *, zone) -> None:
    """Add new events to every rollup: on PostgreSQL one statement for the whole list.

    Events that share a rollup row are summed in Python first (an upsert may touch a row only
    once), and each table's rows are written in key order. Every rollup row lies in one local
    month, that is one billing period, whose counter row the recording service has already
    locked: transactions that touch the same rollup rows are serialized by that lock, so the
    order in which the statement's parts run cannot deadlock.

    Sessions: the (day, agent, session) claims are inserted with ``ON CONFLICT DO NOTHING``;
    the ones that went in, and only those, add one to their agent's day and month rows.
    """
    derived = Derived()
    for event in events:
        derived.add(event, local_date(event.timestamp, zone))
    if not derived.daily:
        return
    rows = {
        _DAILY: [
            (*key, totals.period_id, *(getattr(totals, name) for name in _DAILY.sums))
            for key, totals in derived.daily.items()
        ],
        _PERSON: _sum_rows(_PERSON, derived.person),
        _AGENT: [
            (
                *key,
                *(getattr(totals, name) for name in SUMS),
                totals.session_runs,
                0,  # sessions: the claims decide
                json.dumps(histogram_object(totals.latency_histogram)),
            )
            for key, totals in derived.agent.items()
        ],
        _MODEL: [
            (*row, json.dumps(histogram_object(derived.model[row[:4]].latency_histogram)))
            for row in _sum_rows(_MODEL, derived.model)
        ],
        _PRODUCT: _sum_rows(_PRODUCT, derived.product),
        _SUBSCRIPTION: _sum_rows(_SUBSCRIPTION, derived.subscription),
        _SESSIONS: list(derived.sessions),
    }
    rows = {table: sorted(table_rows, key=_sort_key) for table, table_rows in rows.items()}
    _write_in_one_statement(rows)


def _sum_rows(table: _Table, rows: dict[tuple, Sums]) -> list[tuple]:
    return [(*key, *(getattr(totals, name) for name in table.sums)) for key, totals in rows.items()]


def _write_in_one_statement(rows: dict[_Table, list[tuple]]) -> None:
    """Every table in one statement (data-modifying CTEs), each fed by ``unnest``
    of one array per column, whatever the number of rows."""
    parts, params = [], []
    claims = _upsert(_SESSIONS, _from_arrays(_SESSIONS.columns), returning=True)
    parts.append(f"claimed AS ({claims})")
    params += _arrays(_SESSIONS.columns, rows[_SESSIONS])
    parts.append(
        "new_sessions AS ("  # noqa: S608 (names and constants of this module; values are parameters)
        f"SELECT subscription_id, '{DAY}' AS grain, day, agent_id, COUNT(*) AS sessions "
        "FROM claimed GROUP BY 1, 2, 3, 4 UNION ALL "
        f"SELECT subscription_id, '{MONTH}', date_trunc('month', day)::date, agent_id, COUNT(*) "
        "FROM claimed GROUP BY 1, 2, 3, 4)"
    )
    for name, table in (
        ("daily", _DAILY),
        ("person", _PERSON),
        ("model", _MODEL),
        ("product", _PRODUCT),
        ("whole", _SUBSCRIPTION),
    ):
        parts.append(f"{name} AS ({_upsert(table, _from_arrays(table.columns))})")
        params += _arrays(table.columns, rows[table])
    selected = ", ".join(
        "COALESCE(n.sessions, 0)" if column == "sessions" else f"r.{column}"
        for column in _AGENT.columns
    )
    source = (
        f"SELECT {selected} FROM {_unnest(_AGENT.columns)} LEFT JOIN new_sessions n "  # noqa: S608
        "ON n.subscription_id = r.subscription_id AND n.grain = r.grain AND n.day = r.day "
        "AND COALESCE(n.agent_id, 0) = COALESCE(r.agent_id, 0) ORDER BY r.ordinal"
    )
    params += _arrays(_AGENT.columns, rows[_AGENT])
    statement = f"WITH {', '.join(parts)} {_upsert(_AGENT, source)}"
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _unnest(columns: tuple[str, ...]) -> str:
    """A FROM item ``r``: one array parameter per column, numbered by ``ordinal``."""
    arrays = ", ".join(f"%s::{_TYPES.get(column, 'integer')}[]" for column in columns)
    return f"unnest({arrays}) WITH ORDINALITY AS r({', '.join(columns)}, ordinal)"


def _from_arrays(columns: tuple[str, ...]) -> str:
    return f"SELECT {', '.join(columns)} FROM {_unnest(columns)} ORDER BY ordinal"  # noqa: S608


def _arrays(columns: tuple[str, ...], rows: list[tuple]) -> list[list]:
    return [[row[index] for row in rows] for index in range(len(columns))]


def _upsert(table: _Table, source: str, *, returning: bool = False) -> str:
    """``INSERT ... ON CONFLICT`` that adds ``sums`` to an existing row (``last_event_at``
    keeps the latest, histograms add up bucket by bucket), or does nothing when there is
    nothing to add."""
    name = table.table
    sets = [
        f"{c} = CASE WHEN EXCLUDED.{c} > {name}.{c} THEN EXCLUDED.{c} ELSE {name}.{c} END"
        if c == "last_event_at"
        else f"{c} = {name}.{c} + EXCLUDED.{c}"
        for c in table.sums
    ]
    if table.latency:
        sets.append(f"latency_histogram = {_merged_histograms(name)}")
    action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
    statement = f"INSERT INTO {name} ({', '.join(table.columns)}) {source} "
    statement += f"ON CONFLICT ({table.conflict}) {action}"
    if returning:
        statement += f" RETURNING {', '.join(table.key)}"
    return statement


def _merged_histograms(table: str) -> str:
    """The row's histogram plus the new one, bucket by bucket (JSON objects): the new buckets,
    each added to the row's count, replace theirs; a cost in the new buckets, not the row's."""
    old, new = f"{table}.latency_histogram", "EXCLUDED.latency_histogram"
    added = (
        f"(SELECT jsonb_object_agg(key, COALESCE(({old} ->> key)::bigint, 0) "  # noqa: S608
        f"+ value::bigint) FROM jsonb_each_text({new}))"
    )
    merged, empty = f"{old} || {added}", "'{}'::jsonb"
    return f"CASE WHEN {new} = {empty} THEN {old} ELSE {merged} END"


def _sort_key(key: tuple) -> tuple:
    """Order rollup keys with NULL dimensions first, as comparable tuples."""
    return tuple((value is not None, value if value is not None else 0) for value in key)
