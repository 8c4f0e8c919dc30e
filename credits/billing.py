"""Billing periods as rows: found or opened lazily, so recording never depends on beat."""

import logging
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, Min, OuterRef, Subquery
from django.db.models.functions import Coalesce

from accounts.models import Subscription

from .models import BillingPeriod
from .periods import period_bounds, periods_through

logger = logging.getLogger(__name__)


def period_for(*, subscription: Subscription, instant: datetime) -> BillingPeriod:
    """The subscription's period containing ``instant``, opened if it does not exist yet.

    Safe under concurrency: the unique (subscription, start) constraint decides the race and
    the loser reads the winner's row.
    """
    bounds = period_bounds(instant, subscription.zone)
    period = BillingPeriod.objects.filter(subscription=subscription, start=bounds.start).first()
    if period is not None:
        return period
    try:
        with transaction.atomic():
            return BillingPeriod.objects.create(
                subscription=subscription, start=bounds.start, end=bounds.end
            )
    except IntegrityError:
        return BillingPeriod.objects.get(subscription=subscription, start=bounds.start)


# Every subscription without a period containing now gets the months after the instant its
# periods cover until (the end of its latest period or, without any, its creation) through the
# current one; the current one even when a later period exists (opened early by an event a few
# minutes before midnight, say). The months come from ``local_month``: each time zone's
# periods, computed by ``credits.periods``. Rows are inserted in (subscription, start) order,
# so that two concurrent runs wait for each other instead of deadlocking.
OPEN_MISSING_PERIODS = """
WITH local_month (timezone, start, "end") AS (VALUES {months}),
due AS (
    SELECT s.id, s.timezone,
           COALESCE((SELECT p."end" FROM {period} p WHERE p.subscription_id = s.id
                     ORDER BY p.start DESC LIMIT 1), s.created_at) AS covered_until
    FROM {subscription} s
    WHERE NOT EXISTS (SELECT 1 FROM {period} p
                      WHERE p.subscription_id = s.id AND p.start <= %(now)s AND p."end" > %(now)s)
)
INSERT INTO {period} (subscription_id, start, "end", credits_used, excess_used, opened_at)
SELECT due.id, local_month.start, local_month."end", 0, 0, %(now)s
FROM due JOIN local_month ON local_month.timezone = due.timezone
WHERE local_month."end" > due.covered_until OR local_month."end" > %(now)s
ORDER BY due.id, local_month.start
ON CONFLICT (subscription_id, start) DO NOTHING
RETURNING subscription_id
"""


def open_current_periods(*, now: datetime) -> int:
    """Make sure every subscription has its period containing ``now``, opening the months it
    missed on the way (beat down for a while, a subscription without periods); return how many
    subscriptions had to catch up.

    Set-based, so that the 1st of the month costs the same two statements for a hundred or a
    hundred thousand subscriptions. The first finds the time zones of the subscriptions behind
    (in the steady state, none) and how far back they are; their month boundaries are computed
    here with ``zoneinfo``, by the same code as ``period_for``, so a period opened by beat and
    one opened by an event are the same row. The second opens them all with one
    ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: the unique (subscription, start)
    constraint makes concurrent runs (two beats, an event opening its period lazily) open each
    period once. A time zone that ``zoneinfo`` does not know is logged and its subscriptions
    are skipped; the others still open.
    """
    periods = BillingPeriod.objects.filter(subscription=OuterRef("pk"))
    latest_end = Subquery(periods.order_by("-start").values("end")[:1])
    behind = (
        Subscription.objects.filter(~Exists(periods.filter(start__lte=now, end__gt=now)))
        .order_by()
        .values("timezone")
        .annotate(since=Min(Coalesce(latest_end, "created_at")), subscriptions=Count("pk"))
    )
    with transaction.atomic():
        _plan_without_jit()
        months = []
        for row in behind:
            try:
                zone = ZoneInfo(row["timezone"])
            except (ZoneInfoNotFoundError, ValueError):
                logger.error(
                    "event=period_not_opened reason=unknown_time_zone timezone=%r subscriptions=%s",
                    row["timezone"],
                    row["subscriptions"],
                )
                continue
            months += [
                (row["timezone"], bounds.start, bounds.end)
                for bounds in periods_through(row["since"], now, zone)
            ]
        if not months:
            return 0
        caught_up = len(set(_insert_missing_periods(months=months, now=now)))
    logger.info("event=periods_opened subscriptions=%s", caught_up)
    return caught_up


def _plan_without_jit() -> None:
    """At a month start PostgreSQL's statistics still describe last month, so the planner takes
    every subscription to be behind and JIT-compiles both statements: at 100,000 subscriptions
    that cost a second, more than it saved. Off for this transaction only."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")


def _insert_missing_periods(
    *, months: list[tuple[str, datetime, datetime]], now: datetime
) -> list[int]:
    """Run ``OPEN_MISSING_PERIODS``; the subscription of each period it opened."""
    adapt = connection.ops.adapt_datetimefield_value
    values, params = [], {"now": adapt(now)}
    for n, (zone_name, start, end) in enumerate(months):
        values.append(f"(%(zone{n})s, %(start{n})s, %(end{n})s)")
        params.update({f"zone{n}": zone_name, f"start{n}": adapt(start), f"end{n}": adapt(end)})
    sql = OPEN_MISSING_PERIODS.format(
        months=", ".join(values),
        period=BillingPeriod._meta.db_table,
        subscription=Subscription._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [subscription_id for (subscription_id,) in cursor.fetchall()]
