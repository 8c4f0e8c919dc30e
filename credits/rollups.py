"""Everything derived from the ledger: rollups and period counters.

One specification, ``ROLLUPS``, states each rollup: its table, the ledger columns it is keyed
by besides subscription and local day, whether it has monthly rows, and what it keeps beyond
the sums every rollup has (``SUMS``). The SQL of every derivation is generated from it, in
one section below, and is one statement shape with two sources:

* new events, upserted in the transaction that writes them (``rollup_ctes``): usage events
  in the same statement as their ledger rows (``ledger.add_to_ledger``), adjustments by
  ``add_to_rollups`` (arrays of their columns), one statement per call;
* ``derive_rollups``: the ledger rows of some subscriptions, for bulk loads (the demo, the
  benchmark) into empty rollups, and for ``rebuild_rollups``, the repair tool, which empties a
  subscription's rollups and counters first.

The rollups, and who reads them:

* ``DailyUsage``: every dimension per local day. A project manager's and a member's pages read
  it, and it is the reports' fallback for any combination of dimensions that no narrower
  rollup holds.
* Narrow rollups, keyed by fewer dimensions, with a row per local day and one per local month
  (``grain``), so that twelve months read about twelve rows per key, not 365.
  ``narrowest_rollup`` picks the one a report reads; the admin's dashboard reads
  ``ProductRollup`` and every member table ``PersonRollup``. ``ProductRollup`` is keyed by
  environment too (a few more rows per day, no more rows written per event), so that usage by
  environment or project and product or feature, per month, reads monthly rows. Only
  ``PersonRollup`` holds environment and user, which scoping needs for anyone who sees less
  than whole subscriptions; the others are for admins.
* ``AgentRollup`` and ``ModelRollup`` also keep a latency histogram (runs per logarithmic
  bucket, ``LATENCY_BUCKETS``): their 95th percentile within 1% (``latency_percentile``).
* ``AgentRollup.sessions`` counts each session once per local day on which it ran with the
  agent; ``AgentSessionDay`` holds the (day, agent, session) claims that make that exact under
  concurrent writers: a claim that went in adds one to its day's and month's row. Claims of
  closed days are pruned (``credits.pruning``); ``rebuild_rollups`` derives them again.

* ``HourlyUsage``: every dimension per local hour, for the usage API's hourly windows; kept for
  ``credits.pruning.HOURLY_USAGE_RETENTION_DAYS`` days (``prune_hourly_usage``).

Local days and hours are the subscription's (``AT TIME ZONE``, ``date_trunc(..., zone)``, DST
included).
"""

from bisect import bisect_right
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import cache

from django.db import connection, models, transaction
from psycopg import sql

from accounts.models import Subscription, TeamMembership

from .ledger_columns import DIMENSIONS
from .models import (
    AgentRollup,
    AgentSessionDay,
    ApiKeyPeriodUsage,
    BillingPeriod,
    CreditEvent,
    DailyUsage,
    HourlyUsage,
    ModelRollup,
    PersonRollup,
    ProductRollup,
    RollupGrain,
    SubscriptionRollup,
    TeamPeriodUsage,
    UserPeriodUsage,
)
from .periods import month_start, next_month_start

DAY, MONTH = RollupGrain.DAY.value, RollupGrain.MONTH.value
# The ledger columns a rollup may be keyed by (``ledger_columns.DIMENSIONS``), with the value
# that stands for a missing one in the rollups' unique indexes (None: never missing).
_MISSING_KEY = {"api_key_id": "", "model": None, "feature": None}
KEY_COLUMNS = {column: _MISSING_KEY.get(column, 0) for column in DIMENSIONS}


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


# --- The rollups -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollup:
    """One rollup: its model, the ledger columns it is keyed by (``key``, besides subscription
    and day, in the order of its unique index), whether it has monthly rows, whether its rows
    are local hours (``hourly``: an ``hour`` instant instead of a ``day``), and what it keeps
    besides ``SUMS``: a latency histogram, session counts, the latest event's time
    (``latest``), the billing period (``period``)."""

    model: type[models.Model]
    key: tuple[str, ...]
    monthly: bool = True
    hourly: bool = False
    latency: bool = False
    sessions: bool = False
    latest: bool = False
    period: bool = False

    @property
    def dimensions(self) -> frozenset[str]:
        """What a report may group or filter by when it reads this rollup."""
        return frozenset(column.removesuffix("_id") for column in self.key)

    @property
    def table(self) -> str:
        return self.model._meta.db_table


ALL_DIMENSIONS = frozenset(name.removesuffix("_id") for name in DIMENSIONS)
# Scoping (``UsageQuerySet.visible_to``) reads these for anyone who does not administer the
# whole subscriptions being read.
SCOPING_DIMENSIONS = frozenset({"environment", "user"})
# Narrowest first: fewest rows per subscription and month on the benchmark's data. The hourly
# rollup comes last: only the usage API's hourly windows read it, never ``narrowest_rollup``.
ROLLUPS = (
    Rollup(ModelRollup, ("model",), latency=True),
    Rollup(AgentRollup, ("agent_id",), latency=True, sessions=True),
    Rollup(ProductRollup, ("product_id", "feature", "environment_id")),
    Rollup(PersonRollup, ("environment_id", "user_id", "api_key_id"), latest=True),
    Rollup(SubscriptionRollup, ("product_id", "agent_id", "model", "feature")),
    Rollup(DailyUsage, DIMENSIONS, monthly=False, latest=True, period=True),
    Rollup(HourlyUsage, DIMENSIONS, monthly=False, hourly=True),
)
HOURLY = ROLLUPS[-1]
# What every rollup adds up, as SQL aggregates over ledger rows (``e``).
SUMS = {
    "credits": "SUM(e.credits)",
    "excess_credits": "SUM(e.excess_credits)",
    "grant_credits": "SUM(e.grant_credits)",
    "cost": "SUM(e.cost)",
    "runs": "COUNT(*) FILTER (WHERE e.kind = 'usage')",
    "failed_runs": "COUNT(*) FILTER (WHERE e.kind = 'usage' AND e.status = 'failed')",
    "input_tokens": "SUM(e.input_tokens)",
    "output_tokens": "SUM(e.output_tokens)",
    "latency_ms_total": "COALESCE(SUM(e.latency_ms), 0)",
    "latency_samples": "COUNT(e.latency_ms)",
}


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


# --- Writing rollups: add_to_rollups, rebuild_rollups, derive_rollups ----------------------


def add_to_rollups(events: list[CreditEvent], *, zone) -> None:
    """Add new events to every rollup, in one statement whatever their number.

    Every rollup row lies in one local month, that is one billing period, whose counter row the
    recording service has already locked: transactions that touch the same rollup rows are
    serialized by that lock, and each table's rows are written in key order, so the order in
    which the statement's parts run cannot deadlock.
    """
    if not events:
        return
    params = {column: [getattr(event, column) for event in events] for column in LEDGER_TYPES}
    params["bucket"] = [
        None if event.latency_ms is None else latency_bucket(event.latency_ms) for event in events
    ]
    with connection.cursor() as cursor:
        cursor.execute(_statement(from_ledger=False), {**params, "zone": zone.key})


def derive_rollups(cursor, subscription_ids: list[int]) -> None:
    """Every rollup and the period, user, team and API key counters of these subscriptions,
    from their ledger alone, with set-based SQL.

    The subscriptions must have no rollup rows, session claims, user, team or key counters yet.
    Team counters are summed from the people's, as the recording service charges them: a
    person's usage counts for their team. ``cursor`` is a DB-API cursor (Django's or
    psycopg's) in the caller's transaction.
    """
    params = {"subscriptions": list(subscription_ids), "bounds": list(LATENCY_BUCKETS)}
    for statement in (_statement(from_ledger=True), *_counter_statements()):
        cursor.execute(statement, params)


def rebuild_rollups(*, subscription: Subscription) -> None:
    """Recompute the subscription's rollups and period counters from its ledger.

    The subscription's periods are locked first: the recording service charges a period row
    before it writes a ledger row, so no event can commit into them while the rebuild reads
    the ledger. (A period opened after the lock is not covered; the beat task opens each
    period before its first event in normal operation.)
    """
    with transaction.atomic():
        periods = list(BillingPeriod.objects.select_for_update().filter(subscription=subscription))
        for model in (*(rollup.model for rollup in ROLLUPS), AgentSessionDay):
            model.objects.filter(subscription=subscription).delete()
        for counter in (UserPeriodUsage, TeamPeriodUsage, ApiKeyPeriodUsage):
            counter.objects.filter(period__in=periods).delete()
        with connection.cursor() as cursor:
            derive_rollups(cursor, [subscription.pk])


# --- The SQL, generated from ``ROLLUPS`` ------------------------------------------------------

# The ledger columns the rollups read, with their PostgreSQL types (for the arrays of new
# events that ``add_to_rollups`` sends).
LEDGER_TYPES = {
    "subscription_id": "bigint",
    "period_id": "bigint",
    "timestamp": "timestamptz",
    "environment_id": "bigint",
    "user_id": "bigint",
    "api_key_id": "varchar",
    "product_id": "bigint",
    "agent_id": "bigint",
    "model": "varchar",
    "feature": "varchar",
    "kind": "varchar",
    "status": "varchar",
    "credits": "numeric",
    "excess_credits": "numeric",
    "grant_credits": "numeric",
    "cost": "numeric",
    "input_tokens": "bigint",
    "output_tokens": "bigint",
    "latency_ms": "integer",
    "session_id": "varchar",
}
_IN_SESSION = sql.SQL("e.kind = 'usage' AND e.session_id <> ''")


def _names(columns, alias: str | None = None) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(*filter(None, (alias, c))) for c in columns)


def _grains(alias: str, day: str) -> sql.Composed:
    """A FROM item ``g(grain, day)``: each row of ``alias`` once for its local day and once for
    its local month."""
    day_column = sql.Identifier(alias, day)
    return sql.SQL(
        "CROSS JOIN LATERAL (VALUES ({day}, {column}), "
        "({month}, date_trunc('month', {column})::date)) AS g(grain, day)"
    ).format(day=sql.Literal(DAY), month=sql.Literal(MONTH), column=day_column)


def _indexed(column: str, alias: str | None = None) -> sql.Composable:
    """A key column as the unique indexes hold it: a missing foreign key as 0 (or '')."""
    name = sql.Identifier(*filter(None, (alias, column)))
    missing = KEY_COLUMNS.get(column)
    if missing is None:
        return name
    return sql.SQL("COALESCE({}, {})").format(name, sql.Literal(missing))


def _same(columns, left: str, right: str) -> sql.Composed:
    """Equal keys, a missing foreign key matching a missing one (hashable, unlike ``IS NOT
    DISTINCT FROM``)."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(_indexed(c, left), _indexed(c, right)) for c in columns
    )


def _head(rollup: Rollup) -> tuple[tuple[str, ...], list[sql.Composable], sql.Composable]:
    """The columns before the key (subscription, grain, day or hour, period), the expressions
    over the ledger rows ``e`` that fill them, and the FROM clause."""
    if rollup.hourly:
        return (
            ("subscription_id", "hour"),
            [sql.SQL("e.subscription_id"), sql.SQL("e.local_hour")],
            sql.SQL("e"),
        )
    if rollup.monthly:
        columns = ("subscription_id", "grain", "day")
        values = [sql.SQL("e.subscription_id"), sql.SQL("g.grain"), sql.SQL("g.day")]
        return columns, values, sql.SQL("e {}").format(_grains("e", "local_day"))
    columns = ("subscription_id", "day", *(("period_id",) if rollup.period else ()))
    values = [sql.SQL("e.subscription_id"), sql.SQL("e.local_day")]
    values += [sql.SQL("e.period_id")] if rollup.period else []
    return columns, values, sql.SQL("e")


def _grouped(values: list[sql.Composable], columns) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(value, sql.Identifier(column))
        for value, column in zip(values, columns, strict=True)
    )


def _positions(count: int) -> sql.Composed:
    return sql.SQL(", ").join(sql.Literal(n) for n in range(1, count + 1))


def _rows(rollup: Rollup, *, ordered: bool) -> tuple[tuple[str, ...], sql.Composed]:
    """The rollup's columns and the SELECT that sums the ledger rows ``e`` into its rows
    (``ordered``: in key order, missing keys first)."""
    head, values, source = _head(rollup)
    key = (*head, *rollup.key)
    values = [*values, *(sql.Identifier("e", column) for column in rollup.key)]
    sums = {name: sql.SQL(aggregate) for name, aggregate in SUMS.items()}
    if rollup.latest:
        sums["last_event_at"] = sql.SQL("MAX(e.timestamp)")
    if rollup.sessions:
        sums["session_runs"] = sql.SQL("COUNT(*) FILTER (WHERE {})").format(_IN_SESSION)
    summed = sql.SQL("SELECT {key}, {sums} FROM {source} GROUP BY {positions}")
    if rollup.latency:
        # Summed per key and latency bucket first, then per key: the histogram and the sums
        # in one pass.
        bucket = sql.SQL("CASE WHEN e.kind = 'usage' THEN e.bucket END")
        by_bucket = summed.format(
            key=_grouped([*values, bucket], (*key, "bucket")),
            sums=_grouped([*sums.values(), sql.SQL("COUNT(*)")], (*sums, "bucket_runs")),
            source=source,
            positions=_positions(len(key) + 1),
        )
        values = [sql.Identifier("b", column) for column in key]
        sums = {
            name: sql.SQL("{}(b.{})").format(
                sql.SQL("MAX" if name == "last_event_at" else "SUM"), sql.Identifier(name)
            )
            for name in sums
        }
        sums["latency_histogram"] = sql.SQL(
            "COALESCE(jsonb_object_agg(b.bucket, b.bucket_runs) "
            "FILTER (WHERE b.bucket IS NOT NULL), '{}'::jsonb)"
        )
        source = sql.SQL("({}) b").format(by_bucket)
    summed = summed.format(
        key=_grouped(values, key),
        sums=_grouped(list(sums.values()), sums),
        source=source,
        positions=_positions(len(key)),
    )
    columns = (*key, *sums)
    selected = [sql.Identifier("r", column) for column in columns]
    joins = []
    if rollup.sessions:
        columns += ("sessions",)
        selected.append(sql.SQL("COALESCE(n.sessions, 0)"))
        matched = tuple(column for column in key if column != "period_id")
        joins.append(sql.SQL("LEFT JOIN new_sessions n ON {}").format(_same(matched, "n", "r")))
    in_order = sql.SQL(", ").join(
        sql.SQL("{} NULLS FIRST").format(sql.Identifier("r", column)) for column in key
    )
    select = sql.SQL("SELECT {selected} FROM ({summed}) r {joins}").format(
        selected=sql.SQL(", ").join(selected), summed=summed, joins=sql.SQL(" ").join(joins)
    )
    if ordered:
        select = sql.SQL("{} ORDER BY {}").format(select, in_order)
    return columns, select


def _insert(rollup: Rollup, *, adding: bool) -> sql.Composed:
    """``INSERT`` of the rollup's rows. ``adding``: to rows that may be there already, in key
    order, with ``ON CONFLICT``: the sums add to an existing row's, ``last_event_at`` keeps
    the latest, histograms add up bucket by bucket. Otherwise into an empty rollup (a bulk
    load may have dropped the unique index that ``ON CONFLICT`` needs)."""
    columns, select = _rows(rollup, ordered=adding)
    insert = sql.SQL("INSERT INTO {} ({}) {}").format(
        sql.Identifier(rollup.table), _names(columns), select
    )
    if not adding:
        return insert
    head, _, _ = _head(rollup)
    conflict = [
        *(sql.Identifier(column) for column in head if column != "period_id"),
        *(_indexed(column) for column in rollup.key),
    ]
    table = sql.Identifier(rollup.table)
    sets = []
    for column in columns[len(head) + len(rollup.key) :]:
        name = sql.Identifier(column)
        if column == "last_event_at":
            value = sql.SQL("GREATEST({0}.{1}, EXCLUDED.{1})").format(table, name)
        elif column == "latency_histogram":
            value = _merged_histograms(table)
        else:
            value = sql.SQL("{0}.{1} + EXCLUDED.{1}").format(table, name)
        sets.append(sql.SQL("{} = {}").format(name, value))
    return sql.SQL("{} ON CONFLICT ({}) DO UPDATE SET {}").format(
        insert, sql.SQL(", ").join(conflict), sql.SQL(", ").join(sets)
    )


def _merged_histograms(table: sql.Identifier) -> sql.Composed:
    """The row's histogram plus the new one, bucket by bucket (JSON objects): the new buckets,
    each added to the row's count, replace theirs; a cost in the new buckets, not the row's."""
    return sql.SQL(
        "CASE WHEN EXCLUDED.latency_histogram = '{{}}'::jsonb THEN {t}.latency_histogram "
        "ELSE {t}.latency_histogram || (SELECT jsonb_object_agg(key, "
        "COALESCE(({t}.latency_histogram ->> key)::bigint, 0) + value::bigint) "
        "FROM jsonb_each_text(EXCLUDED.latency_histogram)) END"
    ).format(t=table)


def _source(*, from_ledger: bool) -> sql.Composed:
    """The ledger rows ``e`` to add, with their local day, the instant their local hour starts
    and their latency bucket: the new events (one array per column) or the ledger of some
    subscriptions."""
    if from_ledger:
        return sql.SQL(
            "SELECT {columns}, (l.timestamp AT TIME ZONE s.timezone)::date AS local_day, "
            "date_trunc('hour', l.timestamp, s.timezone) AS local_hour, "
            "width_bucket(l.latency_ms, %(bounds)s::integer[]) - 1 AS bucket "
            "FROM {ledger} l JOIN {subscriptions} s ON s.id = l.subscription_id "
            "WHERE l.subscription_id = ANY(%(subscriptions)s)"
        ).format(
            columns=_names(LEDGER_TYPES, "l"),
            ledger=sql.Identifier(CreditEvent._meta.db_table),
            subscriptions=sql.Identifier(Subscription._meta.db_table),
        )
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(column), sql.SQL(kind))
        for column, kind in {**LEDGER_TYPES, "bucket": "integer"}.items()
    )
    return sql.SQL(
        "SELECT l.*, (l.timestamp AT TIME ZONE %(zone)s)::date AS local_day, "
        "date_trunc('hour', l.timestamp, %(zone)s) AS local_hour "
        "FROM unnest({arrays}) AS l({columns})"
    ).format(arrays=arrays, columns=_names((*LEDGER_TYPES, "bucket")))


def rollup_ctes(*, adding: bool) -> list[sql.Composed]:
    """Every rollup's insert as a data-modifying CTE over the rows ``e`` (to be defined before
    them): ``adding`` new events with ``INSERT ... ON CONFLICT DO UPDATE``, or filling empty
    rollups from the ledger.

    Sessions: the (day, agent, session) claims of new events are inserted with ``ON CONFLICT
    DO NOTHING``; the ones that went in, and only those, add one to their agent's day and
    month rows.
    """
    claims = sql.SQL(
        "INSERT INTO {table} (subscription_id, day, agent_id, session_id) "
        "SELECT DISTINCT e.subscription_id, e.local_day, e.agent_id, e.session_id FROM e "
        "WHERE {in_session} {on_conflict} RETURNING subscription_id, day, agent_id"
    ).format(
        table=sql.Identifier(AgentSessionDay._meta.db_table),
        in_session=_IN_SESSION,
        on_conflict=sql.SQL(
            "ORDER BY 1, 2, 3 NULLS FIRST, 4 "
            "ON CONFLICT (subscription_id, day, {}, session_id) DO NOTHING"
        ).format(_indexed("agent_id"))
        if adding
        else sql.SQL(""),
    )
    new_sessions = sql.SQL(
        "SELECT c.subscription_id, g.grain, g.day, c.agent_id, COUNT(*) AS sessions "
        "FROM claimed c {grains} GROUP BY 1, 2, 3, 4"
    ).format(grains=_grains("c", "day"))
    return [
        sql.SQL("claimed AS ({})").format(claims),
        sql.SQL("new_sessions AS ({})").format(new_sessions),
        *(
            sql.SQL("{} AS ({})").format(
                sql.Identifier(rollup.model._meta.model_name), _insert(rollup, adding=adding)
            )
            for rollup in ROLLUPS
        ),
    ]


@cache
def _statement(*, from_ledger: bool) -> str:
    """Every rollup's insert in one statement (data-modifying CTEs over the rows ``e``): new
    events are added to the rollups, the ledger of some subscriptions fills them empty."""
    parts = [
        sql.SQL("e AS ({})").format(_source(from_ledger=from_ledger)),
        *rollup_ctes(adding=not from_ledger),
    ]
    statement = sql.SQL("WITH {} SELECT 1").format(sql.SQL(", ").join(parts))
    return statement.as_string(None)


def _counter_statements() -> list[str]:
    """The period, user, team and API key counters of ``%(subscriptions)s`` from their
    ledger."""
    tables = {
        "ledger": CreditEvent,
        "periods": BillingPeriod,
        "users": UserPeriodUsage,
        "teams": TeamPeriodUsage,
        "keys": ApiKeyPeriodUsage,
        "team_members": TeamMembership,
    }
    names = {name: sql.Identifier(model._meta.db_table) for name, model in tables.items()}
    statements = (
        "UPDATE {periods} p "
        "SET credits_used = COALESCE(t.credits, 0), excess_used = COALESCE(t.excess, 0), "
        "grant_used = COALESCE(t.granted, 0) "
        "FROM {periods} q LEFT JOIN (SELECT period_id, SUM(credits) AS credits, "
        "SUM(excess_credits) AS excess, SUM(grant_credits) AS granted FROM {ledger} "
        "WHERE subscription_id = ANY(%(subscriptions)s) GROUP BY period_id) t "
        "ON t.period_id = q.id WHERE p.id = q.id AND q.subscription_id = ANY(%(subscriptions)s)",
        "INSERT INTO {users} (subscription_id, period_id, user_id, credits_used) "
        "SELECT subscription_id, period_id, user_id, SUM(credits) FROM {ledger} "
        "WHERE subscription_id = ANY(%(subscriptions)s) AND user_id IS NOT NULL "
        "GROUP BY subscription_id, period_id, user_id",
        "INSERT INTO {teams} (subscription_id, period_id, team_id, credits_used) "
        "SELECT u.subscription_id, u.period_id, m.team_id, SUM(u.credits_used) FROM {users} u "
        "JOIN {team_members} m ON m.user_id = u.user_id AND m.subscription_id = u.subscription_id "
        "WHERE u.subscription_id = ANY(%(subscriptions)s) "
        "GROUP BY u.subscription_id, u.period_id, m.team_id",
        "INSERT INTO {keys} (subscription_id, period_id, api_key_id, credits_used) "
        "SELECT subscription_id, period_id, api_key_id, SUM(credits) FROM {ledger} "
        "WHERE subscription_id = ANY(%(subscriptions)s) AND api_key_id IS NOT NULL "
        "GROUP BY subscription_id, period_id, api_key_id",
    )
    return [sql.SQL(statement).format(**names).as_string(None) for statement in statements]
