"""What a report's rows add beside the sums: sessions and the p95 latency.

* **p95 latency** is read from the latency histograms of ``AgentRollup`` and ``ModelRollup``
  (runs per logarithmic bucket): the same interpolation as PostgreSQL's
  ``percentile_cont(0.95)``, each of the two latencies it interpolates between read as its
  bucket's value, so the result is within 1% of ``percentile_cont`` (exact below about 50 ms,
  where each bucket is one millisecond), given to 0.01 ms.
* **Sessions** are counted once per local day on which they ran with the agent: a session that
  spans midnight counts on both days. ``AgentRollup`` keeps that count.

When the rollup read keeps no histogram or sessions (a reader who sees less than whole
subscriptions; a filter it is not keyed by), they come from the timeframe's ledger rows that
the reader may see, with the same meaning: sessions per local day, and ``percentile_cont(0.95)``
itself, in one query.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.db import connections
from django.db.models import (
    Aggregate,
    Case,
    CharField,
    Count,
    FloatField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Cast, Concat, TruncDate

from accounts.models import Subscription
from credits.models import CreditEvent
from credits.rollups import Rollup, latency_percentile

from .usage import HUNDREDTHS, UsageQuery, ratio

P95 = Decimal("0.95")


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, *, fraction: float):
        super().__init__(expression, fraction=float(fraction))


@dataclass(frozen=True)
class RunStats:
    sessions: int = 0
    runs_in_sessions: int = 0
    p95_latency_ms: Decimal | None = None

    @property
    def avg_runs_per_session(self) -> Decimal | None:
        return ratio(self.runs_in_sessions, self.sessions, HUNDREDTHS)


def run_stats(
    usage: UsageQuery,
    rollup: Rollup,
    group: str,
    *,
    with_sessions=False,
    sessions: dict | None = None,
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
        key: RunStats(*sessions.get(key, (0, 0)), p95_latency_ms=p95.get(key))
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


def _ledger_stats(usage: UsageQuery, group: str, *, sessions: bool, p95: bool) -> dict:
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
        row[group]: RunStats(
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


def _from_float(value: float | None, places: Decimal) -> Decimal | None:
    return None if value is None else Decimal(repr(value)).quantize(places, ROUND_HALF_UP)
